//! `GET /api/openapi.json`: the OpenAPI 3.1 description of the REST routes.
//!
//! Written next to the routes it describes and checked by the end-to-end tests (every route
//! the server serves must appear here).

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

/// Registers `GET /api/openapi.json`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/openapi.json")
            .route(web::get().to(openapi))
            .default_service(web::to(|| async {
                crate::routes::method_not_allowed("GET")
            })),
    );
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn job_id_query() -> Value {
    json!({"name": "jobId", "in": "query", "required": true, "schema": {"type": "string", "pattern": "^job_[0-9A-HJKMNP-TV-Z]{26}$"}})
}

fn render_version() -> Value {
    json!({"name": "renderVersion", "in": "query", "required": false, "schema": {"type": "string", "enum": ["v3"]}})
}

/// The document.
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sora job service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Create video-generation jobs, watch them over WebSocket (GET /api/ws, see docs/api.md), download the results."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}
                    }}}
                },
                "GenerateRequest": {
                    "type": "object",
                    "required": ["prompt"],
                    "properties": {
                        "prompt": {"type": "string", "maxLength": 32000},
                        "preset": {"type": "string"},
                        "model": {"type": "string"},
                        "size": {"type": "string", "example": "1280x720"},
                        "seconds": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                        "remixOf": {"type": "string", "description": "jobId of a completed job of the same owner"},
                        "metadata": {"type": "object", "additionalProperties": {"type": "string"}}
                    }
                },
                "Created": {
                    "type": "object",
                    "properties": {
                        "jobId": {"type": "string"}, "status": {"$ref": "#/components/schemas/Status"},
                        "statusUrl": {"type": "string"}, "downloadUrl": {"type": "string"},
                        "wsUrl": {"type": "string"}, "createdAt": {"type": "string", "format": "date-time"}
                    }
                },
                "Status": {"type": "string", "enum": ["pending", "queued", "in_progress", "completed", "failed", "cancelled"]},
                "Job": {
                    "type": "object",
                    "properties": {
                        "jobId": {"type": "string"}, "status": {"$ref": "#/components/schemas/Status"},
                        "progress": {"type": "integer", "minimum": 0, "maximum": 100},
                        "message": {"type": "string"}, "prompt": {"type": "string"},
                        "spec": {"type": "object", "properties": {"model": {"type": "string"}, "size": {"type": "string"}, "seconds": {"type": "integer"}}},
                        "remixOf": {"type": "string"},
                        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        "error": {"type": ["object", "null"], "properties": {"code": {"type": "string", "enum": ["invalid_request", "content_policy", "quota_exhausted", "provider_error", "content_expired", "timeout", "cancelled_upstream"]}, "message": {"type": "string"}}},
                        "createdAt": {"type": "string", "format": "date-time"},
                        "updatedAt": {"type": "string", "format": "date-time"},
                        "submittedAt": {"type": ["string", "null"], "format": "date-time"},
                        "finishedAt": {"type": ["string", "null"], "format": "date-time"},
                        "downloadUrl": {"type": ["string", "null"], "description": "signed, short-lived"},
                        "downloads": {"type": ["object", "null"], "additionalProperties": {"type": "object", "properties": {"url": {"type": "string"}, "contentType": {"type": "string"}, "size": {"type": "integer"}}}},
                        "filesDeleted": {"type": "boolean"},
                        "statusUrl": {"type": "string"}, "wsUrl": {"type": "string"}
                    }
                }
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/generate": {"post": {
                "summary": "Create a job (answers at once; never waits on the provider)",
                "parameters": [render_version(), {"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 255}}],
                "requestBody": {"required": true, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/GenerateRequest"}},
                    "multipart/form-data": {"schema": {"allOf": [{"$ref": "#/components/schemas/GenerateRequest"}, {"type": "object", "properties": {"inputReference": {"type": "string", "format": "binary"}}}]}}
                }},
                "responses": {
                    "202": {"description": "Accepted", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Created"}}}},
                    "400": error_response("Invalid input"), "401": error_response("No valid credential"),
                    "409": error_response("Idempotency-Key reused with another body"), "413": error_response("Body too large"),
                    "415": error_response("Unsupported content type")
                }
            }},
            "/api/status": {"get": {
                "summary": "Read one job",
                "parameters": [job_id_query(), render_version()],
                "responses": {"200": {"description": "The job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}, "400": error_response("Bad jobId"), "401": error_response("No valid credential"), "404": error_response("No such job for this caller")}
            }},
            "/api/download": {"get": {
                "summary": "Download a finished file (streams; supports Range)",
                "security": [{"bearer": []}, {}],
                "parameters": [job_id_query(), render_version(),
                    {"name": "variant", "in": "query", "schema": {"type": "string", "enum": ["video", "thumbnail", "spritesheet"]}},
                    {"name": "expires", "in": "query", "schema": {"type": "integer"}},
                    {"name": "signature", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The file"}, "206": {"description": "A byte range"}, "304": {"description": "Not modified"},
                    "403": error_response("Invalid or expired signed link"), "404": error_response("No such job or variant"),
                    "409": error_response("Not completed yet"), "410": error_response("Files deleted"), "416": error_response("Range not satisfiable")}
            }},
            "/api/webhook/video-events": {"post": {
                "summary": "The provider's signed webhook (Standard Webhooks)",
                "security": [],
                "responses": {"200": {"description": "{\"received\":true}"}, "400": error_response("Malformed body or missing headers"), "401": error_response("Bad or stale signature"), "503": error_response("No webhook secret configured")}
            }},
            "/api/ws": {"get": {
                "summary": "WebSocket: subscribe to jobs (see docs/api.md for the protocol)",
                "parameters": [{"name": "jobId", "in": "query", "schema": {"type": "string"}}, {"name": "token", "in": "query", "schema": {"type": "string"}, "description": "the API key, for browsers"}],
                "responses": {"101": {"description": "Switching protocols"}, "401": error_response("No valid credential"), "403": error_response("Origin not allowed")}
            }},
            "/api/jobs": {"get": {
                "summary": "List the caller's jobs, newest first",
                "parameters": [{"name": "status", "in": "query", "schema": {"$ref": "#/components/schemas/Status"}}, {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}, {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "{jobs: Job[], nextCursor}"}, "400": error_response("Bad parameter"), "401": error_response("No valid credential")}
            }},
            "/api/jobs/{jobId}": {
                "parameters": [{"name": "jobId", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": {"summary": "Read one job", "responses": {"200": {"description": "The job"}, "404": error_response("No such job for this caller")}},
                "delete": {"summary": "Cancel a job (or delete a finished job's files) and delete it upstream", "responses": {"200": {"description": "{job, cancelled, filesDeleted, upstream: {outcome, message}}"}, "404": error_response("No such job for this caller")}}
            },
            "/api/dev-key": {"get": {"summary": "Emulator mode only: an API key of the owner `demo` for the demo page", "security": [], "responses": {"200": {"description": "{apiKey, owner, emulator}"}, "404": error_response("Not in emulator mode")}}},
            "/api/presets": {"get": {"summary": "The models, sizes, durations and presets on offer", "security": [], "responses": {"200": {"description": "The catalogue"}}}},
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Readiness (database reachable)", "security": [], "responses": {"200": {"description": "ready"}, "503": error_response("not ready")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {"200": {"description": "text exposition format"}}}},
            "/api/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}}
        }
    })
}
