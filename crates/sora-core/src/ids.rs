//! Identifiers: our job ids, the provider's video ids and owner ids.
//!
//! Each identifier is a newtype with a private field; the only ways to get one are to generate it
//! or to parse it, so holding one means it is well formed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string was empty.
    #[error("{kind} is empty")]
    Empty {
        /// Which identifier was being parsed.
        kind: &'static str,
    },
    /// The string was longer than allowed.
    #[error("{kind} is longer than {max} characters")]
    TooLong {
        /// Which identifier was being parsed.
        kind: &'static str,
        /// The maximum length.
        max: usize,
    },
    /// The string had the wrong shape.
    #[error("{kind} is malformed: {reason}")]
    Malformed {
        /// Which identifier was being parsed.
        kind: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

const JOB_PREFIX: &str = "job_";

/// Our identifier of a job: `job_` followed by a ULID (26 Crockford base32 characters).
///
/// It is URL-safe, unique across server instances without coordination, and sorts by creation
/// time (to the millisecond) both as a string and as a value.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(ulid::Ulid);

impl JobId {
    /// A new, unique id stamped with the current time.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(ulid::Ulid::new())
    }

    /// An id made of a millisecond timestamp and 80 random bits, for callers that bring their own
    /// clock and randomness (tests, deterministic replays).
    pub fn from_parts(timestamp_ms: u64, random: u128) -> Self {
        Self(ulid::Ulid::from_parts(timestamp_ms, random))
    }

    /// Milliseconds since the Unix epoch at which the id was generated.
    pub fn timestamp_ms(&self) -> u64 {
        self.0.timestamp_ms()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{JOB_PREFIX}{}", self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

impl FromStr for JobId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "job id";
        if s.is_empty() {
            return Err(IdError::Empty { kind: KIND });
        }
        let rest = s.strip_prefix(JOB_PREFIX).ok_or(IdError::Malformed {
            kind: KIND,
            reason: "it must start with `job_`",
        })?;
        if rest.len() != ulid::ULID_LEN {
            return Err(IdError::Malformed {
                kind: KIND,
                reason: "it must be `job_` followed by 26 characters",
            });
        }
        // The canonical form is upper case; accept only that so that one job has one spelling.
        if rest.bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(IdError::Malformed {
                kind: KIND,
                reason: "it must be upper case after `job_`",
            });
        }
        let invalid = IdError::Malformed {
            kind: KIND,
            reason: "it is not a valid ULID",
        };
        let ulid = ulid::Ulid::from_string(rest).map_err(|_| invalid.clone())?;
        // One job has one spelling: refuse anything that does not print back the same (an
        // overflowing first character, Crockford's aliases for 0 and 1).
        if ulid.to_string() != rest {
            return Err(invalid);
        }
        Ok(Self(ulid))
    }
}

/// The provider's identifier of a video (for OpenAI, `video_...`).
///
/// Providers choose their own formats, so this accepts any short string of URL-path-safe
/// characters (`A-Z a-z 0-9 _ - . :`), which keeps it safe to put in a request path.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VideoId(String);

impl VideoId {
    /// The maximum length accepted.
    pub const MAX_LEN: usize = 200;

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VideoId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_token(s, "video id", Self::MAX_LEN, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
        })
        .map(|s| Self(s.to_owned()))
    }
}

/// The owner of jobs: the name an API key was created for, or whatever an embedding
/// application's authenticator says.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnerId(String);

impl OwnerId {
    /// The maximum length accepted.
    pub const MAX_LEN: usize = 128;

    /// The owner as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for OwnerId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_token(s, "owner", Self::MAX_LEN, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | ':')
        })
        .map(|s| Self(s.to_owned()))
    }
}

fn parse_token<'a>(
    s: &'a str,
    kind: &'static str,
    max: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<&'a str, IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    if !s.chars().all(allowed) {
        return Err(IdError::Malformed {
            kind,
            reason: "it contains a character other than letters, digits and _ - . : @",
        });
    }
    Ok(s)
}

macro_rules! string_id_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($t), self.0)
            }
        }
    };
}

string_id_impls!(VideoId);
string_id_impls!(OwnerId);

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_via_str!(JobId);
serde_via_str!(VideoId);
serde_via_str!(OwnerId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_round_trips_through_its_string_form() {
        let id = JobId::new();
        let s = id.to_string();
        assert!(s.starts_with("job_"));
        assert_eq!(s.len(), 30);
        assert_eq!(s.parse::<JobId>().unwrap(), id);
    }

    #[test]
    fn job_ids_sort_by_creation_time_as_strings_and_values() {
        let a = JobId::from_parts(1_000, u128::MAX >> 48);
        let b = JobId::from_parts(1_001, 0);
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(b.timestamp_ms(), 1_001);
    }

    #[test]
    fn job_id_rejects_malformed_strings() {
        assert_eq!("".parse::<JobId>(), Err(IdError::Empty { kind: "job id" }));
        for bad in [
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "vid_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "job_",
            "job_01ARZ3NDEKTSV4RRFFQ69G5FA",
            "job_01ARZ3NDEKTSV4RRFFQ69G5FAVX",
            "job_01arz3ndektsv4rrffq69g5fav",
            "job_01ARZ3NDEKTSV4RRFFQ69G5FA!",
            // The first character of a ULID is at most 7 (128 bits).
            "job_81ARZ3NDEKTSV4RRFFQ69G5FAV",
        ] {
            assert!(
                matches!(bad.parse::<JobId>(), Err(IdError::Malformed { .. })),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn video_id_accepts_provider_ids_and_rejects_path_characters() {
        let id: VideoId = "video_68d7512d07848190b3e45da0ecbebcde004da08e1e0678d5"
            .parse()
            .unwrap();
        assert_eq!(id.as_str().len(), 54);
        assert!("video/../x".parse::<VideoId>().is_err());
        assert!("video 1".parse::<VideoId>().is_err());
        assert!("".parse::<VideoId>().is_err());
        assert_eq!(
            "v".repeat(201).parse::<VideoId>(),
            Err(IdError::TooLong {
                kind: "video id",
                max: 200
            })
        );
    }

    #[test]
    fn owner_id_accepts_names_and_emails() {
        assert_eq!(
            "alice@example.com".parse::<OwnerId>().unwrap().as_str(),
            "alice@example.com"
        );
        assert!("team-a".parse::<OwnerId>().is_ok());
        assert!("al ice".parse::<OwnerId>().is_err());
        assert!("".parse::<OwnerId>().is_err());
        assert!("x".repeat(129).parse::<OwnerId>().is_err());
    }

    #[test]
    fn ids_serialize_as_plain_strings_and_validate_on_the_way_in() {
        let id = JobId::from_parts(5, 7);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<JobId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<JobId>("\"nope\"").is_err());
    }
}
