//! Integration tests of `sora-emulator`: the real `sora_openai::OpenAiClient` against the
//! emulator over HTTP, raw HTTP for the exact wire answers, webhooks received by a wiremock server
//! and checked by `sora_openai`'s verifier, and the binary's command line.

mod emulator {
    pub mod cli;
    pub mod faults;
    pub mod helpers;
    pub mod lifecycle;
    pub mod validation;
    pub mod webhooks;
}
