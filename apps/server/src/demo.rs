//! The demo page: a small HTML page, its stylesheet and module script, and the dependency-free
//! JavaScript client (`clients/js/sora-client.js`), compiled into the binary so the server needs
//! no files beside it.
//!
//! `GET /` serves the page; `GET /static/{file}` serves its files. Every answer carries
//! `Cache-Control: no-cache` (the browser revalidates, so a new build is picked up at once).

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, web};

use crate::error::ApiError;

/// The page.
const INDEX_HTML: &str = include_str!("../static/index.html");
/// Its module script.
const APP_JS: &str = include_str!("../static/app.js");
/// Its stylesheet.
const STYLE_CSS: &str = include_str!("../static/style.css");
/// The JavaScript client the page imports (also usable by any frontend).
const SORA_CLIENT_JS: &str = include_str!("../../../clients/js/sora-client.js");
/// The client's TypeScript declarations.
const SORA_CLIENT_DTS: &str = include_str!("../../../clients/js/sora-client.d.ts");

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TS: &str = "application/typescript; charset=utf-8";

/// The files under `/static/`: name, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    ("app.js", JS, APP_JS),
    ("style.css", CSS, STYLE_CSS),
    ("sora-client.js", JS, SORA_CLIENT_JS),
    ("sora-client.d.ts", TS, SORA_CLIENT_DTS),
];

/// Registers `GET /` and `GET /static/{file}`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/static/{file}", web::get().to(static_file));
}

fn file_response(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

async fn index() -> HttpResponse {
    file_response(HTML, INDEX_HTML)
}

async fn static_file(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    FILES
        .iter()
        .find(|(file, _, _)| *file == name)
        .map(|(_, content_type, body)| file_response(content_type, body))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "No such file; the demo page's files are app.js, style.css and sora-client.js",
            )
        })
}

#[cfg(test)]
mod tests {
    use actix_web::{App, test};

    use super::*;

    async fn get(path: &str) -> (StatusCode, Option<String>, Option<String>, String) {
        let app = test::init_service(App::new().configure(routes)).await;
        let res = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        let status = res.status();
        let header = |name| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(header::CONTENT_TYPE);
        let cache = header(header::CACHE_CONTROL);
        let body = test::read_body(res).await;
        (
            status,
            content_type,
            cache,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[actix_web::test]
    async fn the_page_and_its_files_are_served_with_their_types_and_no_cache() {
        for (path, ty, needle) in [
            ("/", HTML, "<video"),
            ("/static/app.js", JS, "SoraClient"),
            ("/static/style.css", CSS, "progress"),
            ("/static/sora-client.js", JS, "export class SoraClient"),
            ("/static/sora-client.d.ts", TS, "declare class SoraClient"),
        ] {
            let (status, content_type, cache, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(content_type.as_deref(), Some(ty), "{path}");
            assert_eq!(cache.as_deref(), Some("no-cache"), "{path}");
            assert!(body.contains(needle), "{path} lacks {needle}");
        }
    }

    #[actix_web::test]
    async fn the_page_imports_the_client_and_loads_nothing_from_elsewhere() {
        let (_, _, _, html) = get("/").await;
        assert!(html.contains("/static/app.js"));
        assert!(html.contains("/static/style.css"));
        assert!(!html.contains("http://") && !html.contains("https://"));
        let (_, _, _, app) = get("/static/app.js").await;
        assert!(app.contains("from './sora-client.js'"));
    }

    #[actix_web::test]
    async fn unknown_files_are_404_with_an_error_body() {
        for path in ["/static/nope.js", "/static/..%2Fsrc%2Flib.rs", "/static/"] {
            let (status, _, _, body) = get(path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            if path != "/static/" {
                assert!(body.contains("not_found"), "{path}: {body}");
            }
        }
    }
}
