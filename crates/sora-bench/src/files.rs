//! The download scenario's second baseline: actix-files serving a directory, as fast as the
//! server's own HTTP stack serves a file (ranges included), with nothing else in the way.

use std::net::TcpListener;
use std::path::PathBuf;

/// Serves the files under `dir` at `/` until the process stops.
pub fn serve(listener: TcpListener, dir: PathBuf) -> std::io::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        actix_web::HttpServer::new(move || {
            actix_web::App::new().service(actix_files::Files::new("/", dir.clone()))
        })
        .listen(listener)?
        .run()
        .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_a_file_whole_and_by_range() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.bin"), b"0123456789").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || serve(listener, root));
        let http = reqwest::Client::new();
        let mut whole = None;
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{base}/f.bin")).send().await {
                whole = Some(r.bytes().await.unwrap());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(whole.as_deref(), Some(&b"0123456789"[..]));
        let part = http
            .get(format!("{base}/f.bin"))
            .header("range", "bytes=2-4")
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(&part.bytes().await.unwrap()[..], b"234");
    }
}
