//! Property tests: the `standardwebhooks` crate (the specification's own library) as an
//! independent oracle, in both directions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use sora_openai::webhook::{
    VerifyError, WebhookHeaders, WebhookSecret, WebhookSigner, WebhookVerifier,
};
use standardwebhooks::Webhook;

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn header_map(id: &str, timestamp: i64, signature: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("webhook-id", id.parse().unwrap());
    h.insert("webhook-timestamp", timestamp.to_string().parse().unwrap());
    h.insert("webhook-signature", signature.parse().unwrap());
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn our_signatures_verify_with_standardwebhooks_and_theirs_with_ours(
        key in proptest::collection::vec(any::<u8>(), 1..64),
        id in "[A-Za-z0-9_]{1,40}",
        offset in -250i64..250,
        body in any::<String>(),
    ) {
        let whsec = format!("whsec_{}", STANDARD.encode(&key));
        let ours: WebhookSecret = whsec.parse().unwrap();
        let theirs = Webhook::new(&whsec).unwrap();
        // Near now, because the oracle checks its own clock.
        let timestamp = now_secs() + offset;

        let our_sig = WebhookSigner::new(ours.clone()).sign(&id, timestamp, body.as_bytes());
        let their_sig = theirs.sign(&id, timestamp, body.as_bytes()).unwrap();
        prop_assert_eq!(&our_sig, &their_sig);

        prop_assert!(theirs
            .verify(body.as_bytes(), &header_map(&id, timestamp, &our_sig))
            .is_ok());

        let ts_text = timestamp.to_string();
        let headers = WebhookHeaders {
            id: Some(&id),
            timestamp: Some(&ts_text),
            signature: Some(&their_sig),
        };
        let verifier = WebhookVerifier::new(vec![ours]).unwrap();
        let verified = verifier.verify(&headers, body.as_bytes(), SystemTime::now()).unwrap();
        prop_assert_eq!(verified.id, id.clone());
        prop_assert_eq!(verified.timestamp, timestamp);

        // A changed body fails in both.
        let tampered = format!("{body}!");
        prop_assert_eq!(
            verifier.verify(&headers, tampered.as_bytes(), SystemTime::now()),
            Err(VerifyError::NoMatchingSignature)
        );
        prop_assert!(theirs
            .verify(tampered.as_bytes(), &header_map(&id, timestamp, &our_sig))
            .is_err());
    }

    #[test]
    fn verdicts_on_the_timestamp_agree_with_standardwebhooks(
        key in proptest::collection::vec(any::<u8>(), 24..64),
        offset in prop_oneof![-400i64..-200, 200i64..400],
    ) {
        let whsec = format!("whsec_{}", STANDARD.encode(&key));
        let ours: WebhookSecret = whsec.parse().unwrap();
        let theirs = Webhook::new(&whsec).unwrap();
        let body = br#"{"id":"evt","type":"video.completed","data":{"id":"video_1"}}"#;
        let now = now_secs();
        let timestamp = now + offset;
        let sig = theirs.sign("msg", timestamp, body).unwrap();
        let ts_text = timestamp.to_string();
        let headers = WebhookHeaders { id: Some("msg"), timestamp: Some(&ts_text), signature: Some(&sig) };
        let ours_ok = WebhookVerifier::new(vec![ours])
            .unwrap()
            .verify(&headers, body, UNIX_EPOCH + Duration::from_secs(now as u64))
            .is_ok();
        let theirs_ok = theirs.verify(body, &header_map("msg", timestamp, &sig)).is_ok();
        // Skip the one-second band around the edge where the two clocks may straddle a second.
        if !(299..=301).contains(&offset.abs()) {
            prop_assert_eq!(ours_ok, theirs_ok, "offset {}", offset);
        }
    }
}
