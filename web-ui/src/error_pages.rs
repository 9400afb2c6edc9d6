//! Error pages with the site's header. A page handler's error (a `Page`) is rendered
//! once more here, where the visitor is known, so a 404 or a 403 shows who is signed
//! in (or "Sign in") as every other page does; and a path no route takes is a 404 page
//! (under `/api/`, the API's JSON 404).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest};
use minijinja::context;

use crate::error::{Api, Page, WebError};
use crate::pages::render;
use crate::session::visitor;
use crate::Web;

/// Middleware: a `Page` error's answer, rendered with the visitor's header.
pub async fn with_header(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let res = next.call(req).await?.map_into_boxed_body();
    let Some((status, message)) = res
        .response()
        .error()
        .and_then(|e| e.as_error::<Page>())
        .map(|page| page.0.shown())
    else {
        return Ok(res);
    };
    let http = res.request().clone();
    let Some(web) = http.app_data::<web::Data<Web>>().cloned() else {
        return Ok(res);
    };
    // When the visitor cannot be told (the database is down), the plain page stays.
    let Ok(visitor) = visitor(&web, &http).await else {
        return Ok(res);
    };
    let title = status.canonical_reason().unwrap_or("Error");
    match render(
        &web,
        &visitor,
        &http,
        status,
        "error.html",
        context! { title, message },
    ) {
        Ok(page) => Ok(ServiceResponse::new(http, page)),
        Err(_) => Ok(res),
    }
}

/// A path no route takes.
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, actix_web::Error> {
    let missing = WebError::NoSuchPath(req.path().to_owned());
    Err(match req.path().starts_with("/api/") {
        true => Api(missing).into(),
        false => Page(missing).into(),
    })
}
