//! `GET /v2/`: the API version check (end-1).

use actix_web::HttpResponse;

pub fn check() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body("{}")
}
