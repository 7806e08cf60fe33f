//! Runs the embedded example: `cargo run -p sora-example-embedded`, then
//! `curl -c jar -d user=alice http://127.0.0.1:3000/login` and
//! `curl -b jar -H 'content-type: application/json' -d '{"prompt":"a cat"}' http://127.0.0.1:3000/media/api/generate`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let db = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://data/embedded.db".into());
    let storage = std::env::var("STORAGE_URL").unwrap_or_else(|_| "file://data/embedded".into());
    let mut app = sora_example_embedded::start(&bind, &db, &storage).await?;
    println!("listening on http://{}", app.addr);
    tokio::select! {
        r = app.wait() => r?,
        _ = tokio::signal::ctrl_c() => app.stop().await,
    }
    Ok(())
}
