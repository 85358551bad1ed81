//! The shape of every API answer: the gateway's JSON content type, the request id header, and
//! the error body `{"error_code", "error_msg"}`.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const JSON: &str = "application/json;charset=UTF-8";
const REQUEST_ID: &str = "X-request-Id";

/// An answer with the API's content type and this request id.
pub(crate) fn api_response(
    status: StatusCode,
    body: impl Into<Body>,
    request_id: HeaderValue,
) -> Response {
    let mut response = (status, body.into()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    headers.insert(REQUEST_ID, request_id);
    response
}

/// An error answer with the API's body.
pub(crate) fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: HeaderValue,
) -> Response {
    let body = serde_json::json!({ "error_code": code, "error_msg": message }).to_string();
    api_response(status, body, request_id)
}
