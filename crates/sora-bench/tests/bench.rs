//! Integration tests of sora-bench: the binary's command line and the bare WebSocket baseline
//! it runs as a separate process.

mod bench {
    mod baseline;
    mod cli;
}
