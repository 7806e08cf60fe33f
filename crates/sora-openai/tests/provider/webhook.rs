//! Webhook signatures: the reference test vectors and every rejection case of the reference.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::ExposeSecret;
use sora_openai::webhook::{
    SecretError, VerifiedWebhook, VerifyError, WebhookEvent, WebhookEventKind, WebhookHeaders,
    WebhookSecret, WebhookSigner, WebhookVerifier,
};

struct Vector {
    secret: &'static str,
    id: &'static str,
    timestamp: i64,
    body: &'static str,
    signature: &'static str,
}

const OPENAI: Vector = Vector {
    secret: "whsec_RdvaYFYUXuIFuEbvZHwMfYFhUf7aMYjYcmM24+Aj40c=",
    id: "wh_685c059ae39c8190af8c71ed1022a24d",
    timestamp: 1_750_861_210,
    body: r#"{"id": "evt_685c059ae3a481909bdc86819b066fb6", "object": "event", "created_at": 1750861210, "type": "response.completed", "data": {"id": "resp_123"}}"#,
    signature: "v1,gUAg4R2hWouRZqRQG4uJypNS8YK885G838+EHb4nKBY=",
};

const STANDARD: Vector = Vector {
    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
    timestamp: 1_614_265_330,
    body: r#"{"test": 2432232314}"#,
    signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
};

fn at(timestamp: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(timestamp).unwrap())
}

fn verifier(v: &Vector) -> WebhookVerifier {
    WebhookVerifier::new(vec![v.secret.parse().unwrap()]).unwrap()
}

fn headers<'a>(id: &'a str, timestamp: &'a str, signature: &'a str) -> WebhookHeaders<'a> {
    WebhookHeaders {
        id: Some(id),
        timestamp: Some(timestamp),
        signature: Some(signature),
    }
}

/// Verifies vector `v` with some parts replaced.
fn check(
    v: &Vector,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &str,
    now: i64,
) -> Result<VerifiedWebhook, VerifyError> {
    verifier(v).verify(&headers(id, timestamp, signature), body.as_bytes(), at(now))
}

fn check_vector(v: &Vector) -> Result<VerifiedWebhook, VerifyError> {
    let ts = v.timestamp.to_string();
    check(v, v.id, &ts, v.signature, v.body, v.timestamp)
}

#[test]
fn the_signer_reproduces_both_test_vectors() {
    for v in [&OPENAI, &STANDARD] {
        let signer = WebhookSigner::new(v.secret.parse().unwrap());
        assert_eq!(
            signer.sign(v.id, v.timestamp, v.body.as_bytes()),
            v.signature
        );
    }
}

#[test]
fn the_verifier_accepts_both_test_vectors() {
    for v in [&OPENAI, &STANDARD] {
        assert_eq!(
            check_vector(v),
            Ok(VerifiedWebhook {
                id: v.id.to_owned(),
                timestamp: v.timestamp,
            })
        );
    }
}

#[test]
fn a_signature_for_another_body_id_or_timestamp_is_rejected() {
    let v = &STANDARD;
    let ts = v.timestamp.to_string();
    let other_body = r#"{"test": 2432232315}"#;
    assert_eq!(
        check(v, v.id, &ts, v.signature, other_body, v.timestamp),
        Err(VerifyError::NoMatchingSignature)
    );
    assert_eq!(
        check(v, "msg_other", &ts, v.signature, v.body, v.timestamp),
        Err(VerifyError::NoMatchingSignature)
    );
    let other_ts = (v.timestamp + 1).to_string();
    assert_eq!(
        check(v, v.id, &other_ts, v.signature, v.body, v.timestamp),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn a_body_re_serialised_differently_is_rejected() {
    let v = &STANDARD;
    let ts = v.timestamp.to_string();
    // The same JSON value without the space: the raw bytes are what is signed.
    assert_eq!(
        check(
            v,
            v.id,
            &ts,
            v.signature,
            r#"{"test":2432232314}"#,
            v.timestamp
        ),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn a_header_holding_only_v1_comma_is_rejected() {
    let v = &STANDARD;
    let ts = v.timestamp.to_string();
    assert_eq!(
        check(v, v.id, &ts, "v1,", v.body, v.timestamp),
        Err(VerifyError::NoMatchingSignature)
    );
    assert_eq!(
        check(v, v.id, &ts, "", v.body, v.timestamp),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn a_header_whose_signatures_are_all_wrong_is_rejected() {
    let v = &STANDARD;
    let ts = v.timestamp.to_string();
    let wrong = format!(
        "v1,{} v1,Zm9vYmFy v1,not-base64!! {}",
        OPENAI.signature.trim_start_matches("v1,"),
        "v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU="
    );
    assert_eq!(
        check(v, v.id, &ts, &wrong, v.body, v.timestamp),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn an_unknown_version_alone_is_rejected_even_with_the_right_bytes() {
    let v = &STANDARD;
    let ts = v.timestamp.to_string();
    let right = v.signature.trim_start_matches("v1,");
    for sig in [format!("v1a,{right}"), format!("v2,{right}")] {
        assert_eq!(
            check(v, v.id, &ts, &sig, v.body, v.timestamp),
            Err(VerifyError::NoMatchingSignature),
            "{sig}"
        );
    }
}

#[test]
fn unknown_versions_are_ignored_beside_a_matching_v1() {
    let v = &STANDARD;
    let ts = v.timestamp.to_string();
    let sig = format!("v1a,AAAA v1,Zm9vYmFy {} v9,xyz", v.signature);
    assert!(check(v, v.id, &ts, &sig, v.body, v.timestamp).is_ok());
}

#[test]
fn timestamps_beyond_the_tolerance_are_rejected_in_both_directions() {
    let v = &STANDARD;
    let ts = v.timestamp.to_string();
    let sig = v.signature;
    assert_eq!(
        check(v, v.id, &ts, sig, v.body, v.timestamp + 301),
        Err(VerifyError::TooOld)
    );
    assert_eq!(
        check(v, v.id, &ts, sig, v.body, v.timestamp - 301),
        Err(VerifyError::TooNew)
    );
    assert!(check(v, v.id, &ts, sig, v.body, v.timestamp + 300).is_ok());
    assert!(check(v, v.id, &ts, sig, v.body, v.timestamp - 300).is_ok());
}

#[test]
fn the_tolerance_is_configurable() {
    let v = &STANDARD;
    let ts = v.timestamp.to_string();
    let strict = verifier(v).with_tolerance(Duration::from_secs(10));
    let h = headers(v.id, &ts, v.signature);
    assert_eq!(
        strict.verify(&h, v.body.as_bytes(), at(v.timestamp + 11)),
        Err(VerifyError::TooOld)
    );
    assert!(
        strict
            .verify(&h, v.body.as_bytes(), at(v.timestamp + 10))
            .is_ok()
    );
}

#[test]
fn a_non_integer_timestamp_is_rejected() {
    let v = &STANDARD;
    for ts in ["1614265330.5", "abc", "", "1e9", "99999999999999999999"] {
        assert_eq!(
            check(v, v.id, ts, v.signature, v.body, v.timestamp),
            Err(VerifyError::InvalidTimestamp),
            "{ts:?}"
        );
    }
}

#[test]
fn missing_headers_are_rejected_and_named() {
    let v = &STANDARD;
    let ts = v.timestamp.to_string();
    let full = headers(v.id, &ts, v.signature);
    let cases = [
        (WebhookHeaders { id: None, ..full }, "webhook-id"),
        (
            WebhookHeaders {
                timestamp: None,
                ..full
            },
            "webhook-timestamp",
        ),
        (
            WebhookHeaders {
                signature: None,
                ..full
            },
            "webhook-signature",
        ),
    ];
    for (h, name) in cases {
        assert_eq!(
            verifier(v).verify(&h, v.body.as_bytes(), at(v.timestamp)),
            Err(VerifyError::MissingHeader(name))
        );
    }
    assert_eq!(
        verifier(v).verify(&WebhookHeaders::default(), b"", at(v.timestamp)),
        Err(VerifyError::MissingHeader("webhook-id"))
    );
}

#[test]
fn checks_run_in_order_headers_then_timestamp_format_then_age_then_signature() {
    let v = &STANDARD;
    // A missing signature header wins over a bad timestamp.
    let h = WebhookHeaders {
        id: Some(v.id),
        timestamp: Some("nope"),
        signature: None,
    };
    assert_eq!(
        verifier(v).verify(&h, b"", at(0)),
        Err(VerifyError::MissingHeader("webhook-signature"))
    );
    // A stale timestamp wins over a wrong signature.
    let ts = v.timestamp.to_string();
    assert_eq!(
        check(v, v.id, &ts, "v1,Zm9vYmFy", v.body, v.timestamp + 1000),
        Err(VerifyError::TooOld)
    );
}

#[test]
fn a_secret_that_is_not_base64_after_the_prefix_is_a_configuration_error() {
    assert_eq!(
        "whsec_not*base64!".parse::<WebhookSecret>().unwrap_err(),
        SecretError::InvalidBase64
    );
    assert_eq!(
        "whsec_".parse::<WebhookSecret>().unwrap_err(),
        SecretError::Empty
    );
    assert_eq!("".parse::<WebhookSecret>().unwrap_err(), SecretError::Empty);
    assert_eq!(
        WebhookVerifier::new(vec![]).unwrap_err(),
        SecretError::NoSecrets
    );
}

#[test]
fn a_secret_without_the_prefix_is_used_as_raw_bytes() {
    let raw: WebhookSecret = "plain-text-secret".parse().unwrap();
    let same = WebhookSecret::from_bytes(b"plain-text-secret".to_vec()).unwrap();
    let a = WebhookSigner::new(raw).sign("msg", 1, b"{}");
    let b = WebhookSigner::new(same).sign("msg", 1, b"{}");
    assert_eq!(a, b);
    // And differs from reading the same text as base64.
    let decoded: WebhookSecret = "whsec_cGxhaW4".parse().unwrap();
    assert_ne!(a, WebhookSigner::new(decoded).sign("msg", 1, b"{}"));
}

#[test]
fn a_generated_secret_round_trips_through_its_whsec_form_and_is_never_printed() {
    let secret = WebhookSecret::generate();
    let whsec = secret.to_whsec();
    let text = whsec.expose_secret();
    assert!(text.starts_with("whsec_"));
    let again: WebhookSecret = text.parse().unwrap();
    let body = b"{\"id\":\"evt\"}";
    assert_eq!(
        WebhookSigner::new(secret.clone()).sign("m", 5, body),
        WebhookSigner::new(again).sign("m", 5, body)
    );
    assert_eq!(format!("{secret:?}"), "WebhookSecret(***)");
    let signer = WebhookSigner::new(secret);
    assert!(!format!("{signer:?}").contains(text.trim_start_matches("whsec_")));
    assert_ne!(
        WebhookSecret::generate().to_whsec().expose_secret(),
        text,
        "two generated secrets differ"
    );
}

#[test]
fn any_of_several_secrets_verifies_during_a_rotation() {
    let old = WebhookSecret::generate();
    let new = WebhookSecret::generate();
    let verifier = WebhookVerifier::new(vec![old.clone(), new.clone()]).unwrap();
    let now = SystemTime::now();
    let ts = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let ts_text = ts.to_string();
    let body = br#"{"type":"video.completed"}"#;
    for secret in [old, new] {
        let sig = WebhookSigner::new(secret).sign("msg_r", ts, body);
        assert!(
            verifier
                .verify(&headers("msg_r", &ts_text, &sig), body, now)
                .is_ok()
        );
    }
    let stranger = WebhookSigner::new(WebhookSecret::generate()).sign("msg_r", ts, body);
    assert_eq!(
        verifier.verify(&headers("msg_r", &ts_text, &stranger), body, now),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn video_events_parse_into_known_kinds() {
    let e = WebhookEvent::parse(
        br#"{"id":"evt_1","object":"event","created_at":1758941485,"type":"video.completed","data":{"id":"video_1"}}"#,
    )
    .unwrap();
    assert_eq!(
        e,
        WebhookEvent {
            id: "evt_1".into(),
            created_at: Some(1_758_941_485),
            kind: WebhookEventKind::VideoCompleted,
            video_id: Some("video_1".into()),
        }
    );
    let e = WebhookEvent::parse(
        br#"{"id":"evt_2","type":"video.failed","data":{"id":"video_2"},"extra":true}"#,
    )
    .unwrap();
    assert_eq!(e.kind, WebhookEventKind::VideoFailed);
    assert_eq!(e.kind.as_str(), "video.failed");
    assert_eq!(e.created_at, None);
}

#[test]
fn other_events_are_kept_as_other() {
    let e = WebhookEvent::parse(OPENAI.body.as_bytes()).unwrap();
    assert_eq!(e.kind, WebhookEventKind::Other("response.completed".into()));
    assert_eq!(e.kind.as_str(), "response.completed");
    assert_eq!(e.video_id.as_deref(), Some("resp_123"));
    let e = WebhookEvent::parse(br#"{"id":"evt_3","type":"batch.completed"}"#).unwrap();
    assert_eq!(e.video_id, None);
}

#[test]
fn malformed_events_are_errors() {
    assert!(WebhookEvent::parse(b"not json").is_err());
    assert!(WebhookEvent::parse(br#"{"id":"evt"}"#).is_err());
    assert!(WebhookEvent::parse(br#"{"type":"video.completed"}"#).is_err());
}
