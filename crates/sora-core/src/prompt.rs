//! The text prompt of a generation.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a prompt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// Nothing but whitespace.
    #[error("prompt is empty")]
    Empty,
    /// Longer than [`Prompt::MAX_CHARS`] characters after trimming.
    #[error("prompt is {len} characters long; at most {max} are allowed")]
    TooLong {
        /// The length found, in characters.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A control character other than newline, carriage return or tab.
    #[error("prompt contains a control character (U+{code:04X}) at character {position}")]
    ControlCharacter {
        /// The character's code point.
        code: u32,
        /// Its position, counted in characters from 0.
        position: usize,
    },
}

/// A validated prompt: trimmed, non-empty, at most 32,000 characters, line endings normalised to
/// `\n`, and no control characters other than newline and tab.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Prompt(String);

impl Prompt {
    /// The maximum length in characters (Unicode scalar values), as the OpenAI Videos API allows.
    pub const MAX_CHARS: usize = 32_000;

    /// Validates and normalises a prompt.
    pub fn parse(raw: &str) -> Result<Self, PromptError> {
        // Text areas send CRLF, and old Macs sent lone CR: both become LF.
        let normalised = raw.replace("\r\n", "\n").replace('\r', "\n");
        let trimmed = normalised.trim();
        if trimmed.is_empty() {
            return Err(PromptError::Empty);
        }
        let mut len = 0;
        for (position, c) in trimmed.chars().enumerate() {
            if c.is_control() && c != '\n' && c != '\t' {
                return Err(PromptError::ControlCharacter {
                    code: u32::from(c),
                    position,
                });
            }
            len += 1;
        }
        if len > Self::MAX_CHARS {
            return Err(PromptError::TooLong {
                len,
                max: Self::MAX_CHARS,
            });
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The prompt text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Prompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Prompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Prompts can be long; a debug print shows the start only.
        let head: String = self.0.chars().take(60).collect();
        if head.len() < self.0.len() {
            write!(f, "Prompt({head:?}...)")
        } else {
            write!(f, "Prompt({head:?})")
        }
    }
}

impl Serialize for Prompt {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_is_trimmed() {
        assert_eq!(Prompt::parse("  a cat \n").unwrap().as_str(), "a cat");
    }

    #[test]
    fn crlf_and_lone_cr_become_lf() {
        assert_eq!(
            Prompt::parse("one\r\ntwo\rthree\tfour").unwrap().as_str(),
            "one\ntwo\nthree\tfour"
        );
    }

    #[test]
    fn blank_prompt_is_refused() {
        assert_eq!(Prompt::parse(""), Err(PromptError::Empty));
        assert_eq!(Prompt::parse(" \r\n\t "), Err(PromptError::Empty));
    }

    #[test]
    fn length_is_counted_in_characters_not_bytes() {
        let exactly = "é".repeat(Prompt::MAX_CHARS);
        assert!(Prompt::parse(&exactly).is_ok());
        let over = "é".repeat(Prompt::MAX_CHARS + 1);
        assert_eq!(
            Prompt::parse(&over),
            Err(PromptError::TooLong {
                len: 32_001,
                max: 32_000
            })
        );
    }

    #[test]
    fn control_characters_are_refused_with_their_position() {
        assert_eq!(
            Prompt::parse("ab\u{0}c"),
            Err(PromptError::ControlCharacter {
                code: 0,
                position: 2
            })
        );
        assert!(Prompt::parse("a\u{1b}[31m").is_err());
        assert!(Prompt::parse("a\u{7f}").is_err());
    }

    #[test]
    fn debug_output_is_truncated() {
        let p = Prompt::parse(&"x".repeat(100)).unwrap();
        assert!(format!("{p:?}").ends_with("...)"));
    }
}
