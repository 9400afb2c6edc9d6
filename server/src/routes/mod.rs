//! The route table: every endpoint of the distribution spec, one module per resource.
//!
//! `<name>` may contain slashes, so it is matched with `.+`; the more specific
//! upload routes are registered before the blob routes.

mod base;
mod blobs;
mod catalog;
mod manifests;
mod referrers;
mod tags;
mod token;
mod uploads;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};

use crate::error::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(crate::health::healthz))
        .route("/readyz", web::get().to(crate::health::readyz))
        .route("/metrics", web::get().to(crate::observe::metrics))
        .service(
            web::resource("/auth/token")
                .route(web::get().to(token::get))
                .route(web::post().to(token::post))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/auth/signup")
                .route(web::post().to(token::signup))
                .default_service(web::to(method_not_allowed)),
        )
        .route("/v2/", web::get().to(base::check))
        .route("/v2", web::get().to(base::check))
        .route("/v2/_catalog", web::get().to(catalog::list))
        .service(
            web::resource([
                "/v2/{name:.+}/blobs/uploads/",
                "/v2/{name:.+}/blobs/uploads",
            ])
            .route(web::post().to(uploads::start))
            .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v2/{name:.+}/blobs/uploads/{id}")
                .route(web::get().to(uploads::status))
                .route(web::patch().to(uploads::append))
                .route(web::put().to(uploads::complete))
                .route(web::delete().to(uploads::cancel))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v2/{name:.+}/blobs/{digest}")
                .route(web::get().to(blobs::get))
                .route(web::head().to(blobs::head))
                .route(web::delete().to(blobs::delete))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v2/{name:.+}/manifests/{reference}")
                .route(web::get().to(manifests::get))
                .route(web::head().to(manifests::head))
                .route(web::put().to(manifests::put))
                .route(web::delete().to(manifests::delete))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v2/{name:.+}/tags/list")
                .route(web::get().to(tags::list))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v2/{name:.+}/referrers/{digest}")
                .route(web::get().to(referrers::list))
                .default_service(web::to(method_not_allowed)),
        );
}

async fn method_not_allowed() -> HttpResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "method not allowed on this endpoint",
    )
    .error_response()
}

pub async fn not_found() -> HttpResponse {
    ApiError::new(StatusCode::NOT_FOUND, "UNSUPPORTED", "no such endpoint").error_response()
}
