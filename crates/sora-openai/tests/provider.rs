//! Integration tests of `sora-openai`: the client against a wiremock server, and the webhook
//! signatures against the reference test vectors and the `standardwebhooks` crate.

mod provider {
    pub mod client_calls;
    pub mod client_errors;
    pub mod download;
    pub mod helpers;
    pub mod webhook;
    pub mod webhook_oracle;
}
