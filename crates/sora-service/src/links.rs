//! Signed, short-lived download links.
//!
//! Browsers cannot put a credential on a `<video src>`, so status answers carry links with an
//! expiry and an HMAC-SHA256 signature over the job, the variant and the expiry. A link that was
//! tampered with or has expired is refused.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sora_core::{JobId, Variant};

type HmacSha256 = Hmac<Sha256>;

/// Why a link was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The expiry has passed.
    #[error("the download link has expired")]
    Expired,
    /// The signature does not match (tampered, or signed with another key).
    #[error("the download link's signature is not valid")]
    BadSignature,
}

/// Signs and checks download links.
#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
    ttl: Duration,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner")
            .field("key", &"***")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl LinkSigner {
    /// A signer with this key; links live for `ttl`. Every instance behind one address needs
    /// the same key.
    pub fn new(key: impl Into<Vec<u8>>, ttl: Duration) -> Self {
        Self {
            key: key.into(),
            ttl,
        }
    }

    /// A signer with a random key, valid in this process only.
    pub fn random(ttl: Duration) -> Self {
        let key: [u8; 32] = rand::random();
        Self::new(key.to_vec(), ttl)
    }

    /// How long links live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn mac(&self, job: JobId, variant: Variant, expires: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(format!("{job}\n{variant}\n{expires}").as_bytes());
        mac
    }

    /// The expiry (Unix seconds) and signature for a link made at `now` (Unix seconds).
    pub fn sign(&self, job: JobId, variant: Variant, now: i64) -> (i64, String) {
        let expires = now.saturating_add(self.ttl.as_secs() as i64);
        let sig = self.mac(job, variant, expires).finalize().into_bytes();
        (expires, URL_SAFE_NO_PAD.encode(sig))
    }

    /// Checks a link's expiry and signature at `now`, in constant time.
    pub fn verify(
        &self,
        job: JobId,
        variant: Variant,
        expires: i64,
        signature: &str,
        now: i64,
    ) -> Result<(), LinkError> {
        let sig = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| LinkError::BadSignature)?;
        self.mac(job, variant, expires)
            .verify_slice(&sig)
            .map_err(|_| LinkError::BadSignature)?;
        if expires < now {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_link_verifies_until_it_expires() {
        let s = LinkSigner::new(b"k".to_vec(), Duration::from_secs(60));
        let job = JobId::from_parts(1, 1);
        let (exp, sig) = s.sign(job, Variant::Video, 1000);
        assert_eq!(exp, 1060);
        assert_eq!(s.verify(job, Variant::Video, exp, &sig, 1060), Ok(()));
        assert_eq!(
            s.verify(job, Variant::Video, exp, &sig, 1061),
            Err(LinkError::Expired)
        );
    }

    #[test]
    fn a_tampered_link_is_refused() {
        let s = LinkSigner::new(b"k".to_vec(), Duration::from_secs(60));
        let job = JobId::from_parts(1, 1);
        let (exp, sig) = s.sign(job, Variant::Video, 1000);
        let bad = Err(LinkError::BadSignature);
        assert_eq!(s.verify(job, Variant::Thumbnail, exp, &sig, 1000), bad);
        assert_eq!(s.verify(job, Variant::Video, exp + 1, &sig, 1000), bad);
        assert_eq!(
            s.verify(JobId::from_parts(1, 2), Variant::Video, exp, &sig, 1000),
            bad
        );
        assert_eq!(s.verify(job, Variant::Video, exp, "not base64!", 1000), bad);
        let other = LinkSigner::new(b"other".to_vec(), Duration::from_secs(60));
        assert_eq!(other.verify(job, Variant::Video, exp, &sig, 1000), bad);
    }
}
