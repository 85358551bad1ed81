//! The official SDK's signing vectors, checked through the crate's public API only.
//!
//! `data/` holds byte-for-byte copies of `shared/vectors/sdk-hmac-sha256.json` (GETs, every
//! intermediate step) and `sdk-hmac-sha256-body.json` (requests with a body: creates, a DELETE,
//! a mix-stream GET), produced by `huaweicloudsdkcore`'s own signer with fake keys and a fixed
//! date. A clean clone (and CI) runs them.

use recwatch_rtc::sign::{
    canonical_query, canonical_uri, encode, payload_hash, sign, signed_headers,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The SDK's own vectors: a byte-for-byte copy of shared/vectors kept in tests/data, so a
/// clean clone (and CI) runs them.
fn vectors() -> Vec<Value> {
    let text = include_str!("data/sdk-hmac-sha256.json");
    serde_json::from_str(text).expect("vectors parse")
}

fn query_pairs(case: &Value) -> Vec<(String, String)> {
    case["query_params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            let key = pair[0].as_str().unwrap().to_string();
            let value = match &pair[1] {
                Value::String(s) => s.clone(),
                // The SDK turns Python values into strings: True -> "true", 10 -> "10".
                Value::Bool(b) => b.to_string(),
                other => other.to_string(),
            };
            (key, value)
        })
        .collect()
}

#[test]
fn every_sdk_vector_matches_at_every_step() {
    let cases = vectors();
    assert_eq!(cases.len(), 6, "the SDK produced six cases");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut headers: Vec<(String, String)> = case["headers_given"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        headers.push(("Host".into(), case["host"].as_str().unwrap().into()));
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let query = query_pairs(&case);
        let path = case["path"].as_str().unwrap();

        assert_eq!(
            canonical_uri(path),
            case["canonical_uri"],
            "{name}: canonical uri"
        );
        assert_eq!(
            canonical_query(&query),
            case["query"],
            "{name}: canonical query"
        );
        assert_eq!(
            signed_headers(&headers),
            case["signed_headers"],
            "{name}: signed headers"
        );

        let signed = sign(
            case["ak"].as_str().unwrap(),
            case["sk"].as_str().unwrap(),
            case["method"].as_str().unwrap(),
            path,
            &query,
            &headers,
            b"",
        );
        assert_eq!(
            signed.canonical_request, case["canonical_request"],
            "{name}: canonical request"
        );
        assert_eq!(
            hex::encode(Sha256::digest(signed.canonical_request.as_bytes())),
            case["canonical_request_sha256"],
            "{name}: canonical request hash"
        );
        assert_eq!(
            signed.string_to_sign, case["string_to_sign"],
            "{name}: string to sign"
        );
        assert_eq!(signed.signature, case["signature"], "{name}: signature");
        assert_eq!(
            signed.authorization, case["authorization"],
            "{name}: authorization"
        );
        assert_eq!(
            signed.authorization, case["headers_sent"]["Authorization"],
            "{name}: the header the SDK sent"
        );
    }
}

#[test]
fn the_path_we_send_is_the_path_the_sdk_sends() {
    for case in vectors() {
        let app = encode(case["app_id"].as_str().unwrap());
        let job = encode(case["job_id"].as_str().unwrap());
        assert_eq!(
            format!("/v2/apps/{app}/individual-stream-jobs/{job}"),
            case["path"],
            "{}",
            case["name"]
        );
    }
}

fn body_vectors() -> Vec<Value> {
    let text = include_str!("data/sdk-hmac-sha256-body.json");
    serde_json::from_str(text).expect("body vectors parse")
}

/// The headers a vector's request carried: the ones it gave plus `Host`, as the SDK sends them.
fn headers_of(case: &Value) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = case["headers_given"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    headers.push(("Host".into(), case["host"].as_str().unwrap().into()));
    headers
}

#[test]
fn every_sdk_body_vector_signs_to_the_sdks_authorization() {
    let cases = body_vectors();
    let names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "create_individual_job",
            "create_mix_job_with_token",
            "stop_individual_job",
            "show_mix_job_no_project",
        ],
        "the SDK produced these four cases"
    );
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let headers = headers_of(case);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = case["body"].as_str().unwrap().as_bytes();

        assert_eq!(
            payload_hash(body),
            case["body_sha256"],
            "{name}: the hashed payload is the body's SHA-256"
        );
        let signed = sign(
            case["ak"].as_str().unwrap(),
            case["sk"].as_str().unwrap(),
            case["method"].as_str().unwrap(),
            case["path"].as_str().unwrap(),
            &[],
            &headers,
            body,
        );
        assert!(
            signed
                .canonical_request
                .ends_with(&format!("\n{}", case["body_sha256"].as_str().unwrap())),
            "{name}: the canonical request ends with the body's hash: {}",
            signed.canonical_request
        );
        assert!(
            case["authorization"]
                .as_str()
                .unwrap()
                .contains(&format!("SignedHeaders={},", signed.signed_headers)),
            "{name}: signed headers {}",
            signed.signed_headers
        );
        assert_eq!(
            signed.authorization, case["authorization"],
            "{name}: authorization"
        );
    }
}

#[test]
fn the_security_token_is_signed_like_any_header() {
    let cases = body_vectors();
    let case = cases
        .iter()
        .find(|c| c["name"] == "create_mix_job_with_token")
        .unwrap();
    let headers = headers_of(case);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        signed_headers(&headers),
        "content-type;host;user-agent;x-project-id;x-sdk-date;x-security-token"
    );
}

#[test]
fn a_body_signature_covers_every_byte_of_the_body() {
    // The SDK's create vector, with its body changed by one byte (and by being re-serialised
    // with a space), no longer matches: the body must be signed exactly as it is sent.
    let cases = body_vectors();
    let case = &cases[0];
    assert_eq!(case["name"], "create_individual_job");
    let headers = headers_of(case);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = case["body"].as_str().unwrap();
    let sign_body = |body: &str| {
        sign(
            case["ak"].as_str().unwrap(),
            case["sk"].as_str().unwrap(),
            "POST",
            case["path"].as_str().unwrap(),
            &[],
            &headers,
            body.as_bytes(),
        )
        .authorization
    };
    assert_eq!(sign_body(body), case["authorization"]);
    for (what, changed) in [
        ("one byte", body.replace("user-7", "user-8")),
        ("re-serialised", body.replace(",\"", ", \"")),
        ("empty", String::new()),
    ] {
        assert_ne!(sign_body(&changed), case["authorization"], "{what}");
    }
}

/// The client's paths for a create (both kinds), a stop and a mix-stream show are the paths
/// the SDK signed in its body vectors, and the body it sends for an individual create is the
/// vector's byte for byte, so its signature is the SDK's.
#[test]
fn create_stop_and_mix_paths_are_the_sdks() {
    use recwatch_rtc::{Auth, ClientConfig, CreateRequest, Kind, RtcClient, Secret};
    let client = RtcClient::new(&ClientConfig::new(
        "https://rtc-api.myhuaweicloud.com".parse().unwrap(),
        Auth::Token {
            token: Secret::new("t"),
        },
    ))
    .unwrap();
    let (app, job) = (
        "5fcdf56512345676f835d0d4",
        "608196a2fa1234567515147f32ef463b",
    );
    let cases = body_vectors();
    let path = |name: &str| {
        cases.iter().find(|c| c["name"] == name).unwrap()["path"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        client.jobs_path(Kind::Individual, app),
        path("create_individual_job")
    );
    assert_eq!(
        client.jobs_path(Kind::Mix, app),
        path("create_mix_job_with_token")
    );
    assert_eq!(
        client.job_path_of(Kind::Individual, app, job),
        path("stop_individual_job")
    );
    assert_eq!(
        client.job_path_of(Kind::Mix, app, job),
        path("show_mix_job_no_project")
    );
    for (name, kind) in [
        ("create_individual_job", Kind::Individual),
        ("create_mix_job_with_token", Kind::Mix),
    ] {
        let case = cases.iter().find(|c| c["name"] == name).unwrap();
        let body = case["body"].as_str().unwrap().as_bytes();
        let request = CreateRequest::parse(kind, body).unwrap();
        assert_eq!(request.kind(), kind);
        if kind == Kind::Individual {
            assert_eq!(request.body(), body, "{name}: sent as the SDK sends it");
        }
    }
}
