//! Per-job faults written as markers in the prompt, such as `[fail:moderation_blocked]` or
//! `[429:2]`, and how they combine with the global [`Faults`].
//!
//! A marker is a bracketed word anywhere in the prompt. Bracketed text that is not a known marker
//! is left alone: it is just part of the prompt.

use std::time::Duration;

use crate::config::Faults;

/// The error code of `[fail]` without a code.
pub const DEFAULT_FAILURE_CODE: &str = "internal_error";

/// The faults a prompt asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptFaults {
    /// `[fail]` / `[fail:CODE]`: the generation fails halfway with this code.
    pub fail: Option<String>,
    /// `[429]` / `[429:N]`: the create answers 429 this many times, then succeeds.
    pub rate_limit: u32,
    /// `[quota]`: the create always answers 429 `insufficient_quota`.
    pub quota: bool,
    /// `[500]`, `[502]`, `[503]`, `[504]`, optionally `:N`: the create answers this status N times
    /// (default once), then succeeds.
    pub server_error: Option<(u16, u32)>,
    /// `[delay:MS]`: every answer about this job is delayed this much.
    pub delay: Option<Duration>,
    /// `[drop-webhook]`: the job's webhook is never sent.
    pub drop_webhook: bool,
    /// `[dup-webhook]` / `[dup-webhook:N]`: the webhook is sent N times (default 2), same id.
    pub webhook_copies: Option<u32>,
    /// `[late-webhook:MS]`: the webhook is sent this long after the job ended.
    pub webhook_delay: Option<Duration>,
    /// `[out-of-order]`: a stale webhook of the opposite type follows the real one.
    pub out_of_order: bool,
    /// `[early-webhook]`: the webhook announcing the job's outcome is sent as soon as the job
    /// starts `in_progress`, before a retrieve shows that outcome.
    pub early_webhook: bool,
    /// `[expire-early]`: the content expires at the moment of completion.
    pub expire_early: bool,
    /// `[stall]`: the job stays `in_progress` forever.
    pub stall: bool,
}

impl PromptFaults {
    /// Reads every marker of a prompt. Unknown or malformed bracketed text is ignored.
    pub fn parse(prompt: &str) -> Self {
        let mut faults = Self::default();
        let mut rest = prompt;
        while let Some(start) = rest.find('[') {
            let after = &rest[start + 1..];
            let Some(end) = after.find(']') else { break };
            faults.apply(after[..end].trim());
            rest = &after[end + 1..];
        }
        faults
    }

    fn apply(&mut self, marker: &str) {
        let (name, arg) = match marker.split_once(':') {
            Some((name, arg)) => (name.trim(), Some(arg.trim())),
            None => (marker, None),
        };
        let number = |default: u32| match arg {
            None => Some(default),
            Some(a) => a.parse::<u32>().ok(),
        };
        let millis = || {
            arg.and_then(|a| a.parse::<u64>().ok())
                .map(Duration::from_millis)
        };
        match name {
            "fail" => {
                let code = match arg {
                    Some(code) if is_code(code) => code.to_owned(),
                    Some(_) => return,
                    None => DEFAULT_FAILURE_CODE.to_owned(),
                };
                self.fail = Some(code);
            }
            "429" => {
                if let Some(n) = number(1) {
                    self.rate_limit = n;
                }
            }
            "quota" if arg.is_none() => self.quota = true,
            "500" | "502" | "503" | "504" => {
                if let (Ok(status), Some(n)) = (name.parse::<u16>(), number(1)) {
                    self.server_error = Some((status, n));
                }
            }
            "delay" => {
                if let Some(d) = millis() {
                    self.delay = Some(d);
                }
            }
            "drop-webhook" if arg.is_none() => self.drop_webhook = true,
            "dup-webhook" => {
                if let Some(n) = number(2) {
                    self.webhook_copies = Some(n);
                }
            }
            "late-webhook" => {
                if let Some(d) = millis() {
                    self.webhook_delay = Some(d);
                }
            }
            "out-of-order" if arg.is_none() => self.out_of_order = true,
            "early-webhook" if arg.is_none() => self.early_webhook = true,
            "expire-early" if arg.is_none() => self.expire_early = true,
            "stall" if arg.is_none() => self.stall = true,
            _ => {}
        }
    }
}

/// An error code is a short snake_case word.
fn is_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

/// The faults of one job once the prompt's markers and the global faults are combined.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct JobFaults {
    pub fail: Option<String>,
    pub stall: bool,
    pub expire_early: bool,
    pub delay: Duration,
    pub drop_webhook: bool,
    pub webhook_copies: u32,
    pub webhook_delay: Duration,
    pub out_of_order: bool,
    pub early_webhook: bool,
}

impl JobFaults {
    /// The markers win over the global settings where both say something. (The global
    /// response delay is applied to every answer by the server itself, so `delay` is the
    /// marker's only.)
    pub fn combine(prompt: &PromptFaults, global: &Faults) -> Self {
        Self {
            fail: prompt
                .fail
                .clone()
                .or_else(|| global.fail_generation.clone()),
            stall: prompt.stall || global.stall,
            expire_early: prompt.expire_early || global.expire_early,
            delay: prompt.delay.unwrap_or_default(),
            drop_webhook: prompt.drop_webhook,
            webhook_copies: prompt
                .webhook_copies
                .unwrap_or(global.webhook_copies)
                .max(1),
            webhook_delay: prompt.webhook_delay.unwrap_or(global.webhook_delay),
            out_of_order: prompt.out_of_order || global.webhook_out_of_order,
            early_webhook: prompt.early_webhook || global.webhook_early,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_prompt_has_no_faults() {
        assert_eq!(
            PromptFaults::parse("a cat [on] a skateboard"),
            PromptFaults::default()
        );
    }

    #[test]
    fn every_marker_is_read() {
        let f = PromptFaults::parse(
            "x [fail:moderation_blocked] [429:3] [quota] [503:2] [delay:150] [drop-webhook] \
             [dup-webhook:4] [late-webhook:250] [out-of-order] [expire-early] [stall] [early-webhook]",
        );
        assert_eq!(f.fail.as_deref(), Some("moderation_blocked"));
        assert_eq!(f.rate_limit, 3);
        assert!(f.quota);
        assert_eq!(f.server_error, Some((503, 2)));
        assert_eq!(f.delay, Some(Duration::from_millis(150)));
        assert!(f.drop_webhook);
        assert_eq!(f.webhook_copies, Some(4));
        assert_eq!(f.webhook_delay, Some(Duration::from_millis(250)));
        assert!(f.out_of_order && f.expire_early && f.stall && f.early_webhook);
    }

    #[test]
    fn markers_without_arguments_use_their_defaults() {
        let f = PromptFaults::parse("[fail][429][500][dup-webhook]");
        assert_eq!(f.fail.as_deref(), Some(DEFAULT_FAILURE_CODE));
        assert_eq!(f.rate_limit, 1);
        assert_eq!(f.server_error, Some((500, 1)));
        assert_eq!(f.webhook_copies, Some(2));
    }

    #[test]
    fn malformed_markers_are_ignored() {
        let f = PromptFaults::parse("[429:many] [delay:soon] [fail:bad code!] [stall:1] [404] [");
        assert_eq!(f, PromptFaults::default());
    }

    #[test]
    fn markers_override_global_faults() {
        let global = Faults {
            fail_generation: Some("global_code".into()),
            webhook_copies: 3,
            ..Faults::default()
        };
        let job = JobFaults::combine(&PromptFaults::parse("[fail:mine]"), &global);
        assert_eq!(job.fail.as_deref(), Some("mine"));
        assert_eq!(job.webhook_copies, 3);
        let job = JobFaults::combine(&PromptFaults::parse("[dup-webhook:0]"), &global);
        assert_eq!(job.webhook_copies, 1);
        assert_eq!(job.fail.as_deref(), Some("global_code"));
    }
}
