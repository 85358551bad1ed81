//! The RTC record-callback signature held against `rtc_record_callback` in
//! shared/vectors/push-and-chat-signing.json (a byte-for-byte copy lives in tests/data so a
//! clean clone runs it), and every way a callback's signature must fail derived from it.

use recwatch_rtc::Secret;
use recwatch_rtc::callback::{
    self, EventType, RecordEvent, SignatureError, SignatureHeaders, sign, verify_signature,
    verify_with_any,
};
use serde_json::Value;

/// The vector's fields, as the file gives them.
struct Vector {
    auth_key: String,
    rand: String,
    timestamp: String,
    body: String,
    signature: String,
}

fn vector() -> Vector {
    let all: Value = serde_json::from_str(include_str!("data/push-and-chat-signing.json"))
        .expect("the vectors file is JSON");
    let v = &all["rtc_record_callback"];
    let field = |name: &str| {
        v[name]
            .as_str()
            .unwrap_or_else(|| panic!("rtc_record_callback.{name} is a string"))
            .to_string()
    };
    Vector {
        auth_key: field("auth_key"),
        rand: field("x_rtc_rand"),
        timestamp: field("x_rtc_timestamp"),
        body: field("body"),
        signature: field("x_rtc_signature"),
    }
}

#[test]
fn the_vector_signs_and_verifies() {
    let v = vector();
    let key = Secret::new(&v.auth_key);
    assert_eq!(
        sign(&key, &v.rand, &v.timestamp, v.body.as_bytes()),
        v.signature,
        "the signer makes the vector's signature"
    );
    let headers = SignatureHeaders {
        rand: &v.rand,
        timestamp: &v.timestamp,
        signature: &v.signature,
    };
    assert_eq!(verify_signature(&key, &headers, v.body.as_bytes()), Ok(()));
    let event = RecordEvent::parse(v.body.as_bytes()).expect("the vector's body parses");
    assert_eq!(event.event_type, EventType::RecordFileComplete);
    assert_eq!(event.job_id.as_deref(), Some("j1"));
}

/// Each case changes one input of the vector; `Ok` means the signature must still verify.
#[test]
fn verify_table() {
    let v = vector();
    let upper = v.signature.to_uppercase();
    let one_hex_digit_off = {
        let mut s = v.signature.clone();
        let last = if s.ends_with('0') { "1" } else { "0" };
        s.replace_range(63.., last);
        s
    };
    let reserialised =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&v.body).unwrap()).unwrap();
    let key_with_newline = format!("{}\n", v.auth_key);
    let key_upper = v.auth_key.to_uppercase();
    let moved_boundary_rand = format!("{}{}", v.rand, &v.timestamp[..2]);
    let moved_boundary_timestamp = v.timestamp[2..].to_string();
    let swapped_body = v.body.replace("\"j1\"", "\"j2\"");
    let with_space = format!("{} ", v.body);

    #[derive(Clone)]
    struct Case<'a> {
        name: &'a str,
        key: &'a str,
        rand: &'a str,
        timestamp: &'a str,
        signature: &'a str,
        body: &'a str,
        want: Result<(), SignatureError>,
    }
    let base = Case {
        name: "",
        key: &v.auth_key,
        rand: &v.rand,
        timestamp: &v.timestamp,
        signature: &v.signature,
        body: &v.body,
        want: Ok(()),
    };
    let garbled = |reason| {
        Err(SignatureError::Garbled {
            header: "X-Rtc-Signature",
            reason,
        })
    };
    let not_64 = "it is not 64 hex characters (a hex HMAC-SHA256)";
    let cases = [
        Case {
            name: "the vector as given",
            ..base.clone()
        },
        Case {
            name: "the signature in upper-case hex",
            signature: &upper,
            ..base.clone()
        },
        Case {
            name: "rand and timestamp moved apart differently: no separator, so it still verifies",
            rand: &moved_boundary_rand,
            timestamp: &moved_boundary_timestamp,
            ..base.clone()
        },
        Case {
            name: "tampered body: another job",
            body: &swapped_body,
            want: Err(SignatureError::Mismatch),
            ..base.clone()
        },
        Case {
            name: "tampered body: one trailing space",
            body: &with_space,
            want: Err(SignatureError::Mismatch),
            ..base.clone()
        },
        Case {
            name: "the same JSON in other bytes (pretty-printed)",
            body: &reserialised,
            want: Err(SignatureError::Mismatch),
            ..base.clone()
        },
        Case {
            name: "empty body",
            body: "",
            want: Err(SignatureError::Mismatch),
            ..base.clone()
        },
        Case {
            name: "wrong key",
            key: "fedcba9876543210fedcba9876543210",
            want: Err(SignatureError::Mismatch),
            ..base.clone()
        },
        Case {
            name: "the key with a trailing newline (as read from a file)",
            key: &key_with_newline,
            want: Err(SignatureError::Mismatch),
            ..base.clone()
        },
        Case {
            name: "the key in another case",
            key: &key_upper,
            want: Err(SignatureError::Mismatch),
            ..base.clone()
        },
        Case {
            name: "another rand",
            rand: "738292",
            want: Err(SignatureError::Mismatch),
            ..base.clone()
        },
        Case {
            name: "another timestamp",
            timestamp: "1700000001",
            want: Err(SignatureError::Mismatch),
            ..base.clone()
        },
        Case {
            name: "rand and timestamp swapped",
            rand: &v.timestamp,
            timestamp: &v.rand,
            want: Err(SignatureError::Mismatch),
            ..base.clone()
        },
        Case {
            name: "the last hex digit changed",
            signature: &one_hex_digit_off,
            want: Err(SignatureError::Mismatch),
            ..base.clone()
        },
        Case {
            name: "all zeros",
            signature: "0000000000000000000000000000000000000000000000000000000000000000",
            want: Err(SignatureError::Mismatch),
            ..base.clone()
        },
        Case {
            name: "empty signature header",
            signature: "",
            want: garbled(not_64),
            ..base.clone()
        },
        Case {
            name: "signature cut to 63 characters",
            signature: &v.signature[..63],
            want: garbled(not_64),
            ..base.clone()
        },
        Case {
            name: "signature cut to 31 bytes",
            signature: &v.signature[..62],
            want: garbled(not_64),
            ..base.clone()
        },
        Case {
            name: "signature with a prefix",
            signature: "sha256=c56bb3bda9855be6c75646686d30d07f4d09388524f03796c4ffaf3177375fc1",
            want: garbled(not_64),
            ..base.clone()
        },
        Case {
            name: "64 characters, not hex",
            signature: "zz6bb3bda9855be6c75646686d30d07f4d09388524f03796c4ffaf3177375fc1",
            want: garbled("it is not hex"),
            ..base.clone()
        },
        Case {
            name: "base64 of the right bytes instead of hex",
            signature: "xWuzvamFW+bHVkZobTDQf00JOIUk8DeWxP+vMXc3X8E=",
            want: garbled(not_64),
            ..base.clone()
        },
    ];
    for case in cases {
        let headers = SignatureHeaders {
            rand: case.rand,
            timestamp: case.timestamp,
            signature: case.signature,
        };
        let got = verify_signature(&Secret::new(case.key), &headers, case.body.as_bytes());
        assert_eq!(got, case.want, "{}", case.name);
    }
}

/// A receiver holds one key per configured app; the signature says which app sent the event.
#[test]
fn verify_with_any_names_the_key_that_verified() {
    let v = vector();
    let other = Secret::new("fedcba9876543210fedcba9876543210");
    let right = Secret::new(&v.auth_key);
    let headers = SignatureHeaders {
        rand: &v.rand,
        timestamp: &v.timestamp,
        signature: &v.signature,
    };
    let body = v.body.as_bytes();
    type Keys<'a> = Vec<(&'a str, &'a Secret)>;
    let cases: [(&str, Keys, Result<&str, SignatureError>); 4] = [
        (
            "the second key verifies",
            vec![("app-a", &other), ("app-b", &right)],
            Ok("app-b"),
        ),
        (
            "the first key verifies",
            vec![("app-b", &right), ("app-a", &other)],
            Ok("app-b"),
        ),
        (
            "no key verifies",
            vec![("app-a", &other)],
            Err(SignatureError::Mismatch),
        ),
        ("no keys configured", vec![], Err(SignatureError::Mismatch)),
    ];
    for (name, keys, want) in cases {
        assert_eq!(verify_with_any(keys, &headers, body), want, "{name}");
    }
    let garbled = SignatureHeaders {
        signature: "not hex",
        ..headers
    };
    assert!(
        matches!(
            verify_with_any([("app-b", &right)], &garbled, body),
            Err(SignatureError::Garbled { .. })
        ),
        "a malformed header is refused as such, not as a mismatch"
    );
}

/// The relay (`forward_to`) signs with fresh rand and timestamp; its receiver verifies with
/// the same key as RTC's callbacks would.
#[test]
fn a_re_signed_body_verifies_with_the_apps_key() {
    let v = vector();
    let key = Secret::new(&v.auth_key);
    let body = br#"{"event_type":"CLOUD_RECORD_SERVER_OVER","app_id":"a","job_id":"j9"}"#;
    let signature = callback::sign(&key, "42", "1700000123", body);
    assert_eq!(signature.len(), 64);
    assert_eq!(signature, signature.to_lowercase(), "lowercase hex");
    let headers = SignatureHeaders {
        rand: "42",
        timestamp: "1700000123",
        signature: &signature,
    };
    assert_eq!(verify_signature(&key, &headers, body), Ok(()));
    assert_eq!(
        verify_signature(&Secret::new("another key"), &headers, body),
        Err(SignatureError::Mismatch)
    );
}
