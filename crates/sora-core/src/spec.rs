//! What to generate (`VideoSpec`) and the catalogue of what a deployment offers.
//!
//! Models, sizes and durations are data, not enums: OpenAI-compatible gateways serve other models
//! with other sizes and durations, so a deployment describes its own in a [`Catalogue`] (the
//! built-in default describes OpenAI's `sora-2` and `sora-2-pro`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A frame size, `WIDTHxHEIGHT` in pixels (for example `1280x720`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VideoSize {
    width: u32,
    height: u32,
}

impl VideoSize {
    /// A size from its dimensions; both must be between 1 and 16384.
    pub fn new(width: u32, height: u32) -> Option<Self> {
        let ok = |v: u32| (1..=16_384).contains(&v);
        (ok(width) && ok(height)).then_some(Self { width, height })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }
}

impl fmt::Display for VideoSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl fmt::Debug for VideoSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VideoSize({self})")
    }
}

impl FromStr for VideoSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || format!("`{s}` is not a size of the form WIDTHxHEIGHT, such as 1280x720");
        let (w, h) = s.split_once('x').ok_or_else(err)?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(w) || !digits(h) {
            return Err(err());
        }
        let (w, h) = (w.parse().map_err(|_| err())?, h.parse().map_err(|_| err())?);
        Self::new(w, h).ok_or_else(err)
    }
}

impl Serialize for VideoSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VideoSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A fully resolved request of what to generate: a model the catalogue offers, with a size and a
/// duration that model allows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VideoSpec {
    /// The provider's model id, such as `sora-2`.
    pub model: String,
    /// The frame size.
    pub size: VideoSize,
    /// The duration in whole seconds.
    pub seconds: u32,
}

/// One model a deployment offers and what it allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelOffer {
    /// The provider's model id.
    pub id: String,
    /// The sizes it accepts; the first is its default.
    pub sizes: Vec<VideoSize>,
    /// The durations in seconds it accepts; the first is its default.
    pub seconds: Vec<u32>,
}

/// A named, ready-made spec (`draft`, `standard`, `pro`...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preset {
    /// The name a request uses.
    pub name: String,
    /// A line for people choosing between presets.
    #[serde(default)]
    pub description: String,
    /// The model.
    pub model: String,
    /// The size.
    pub size: VideoSize,
    /// The duration in seconds.
    pub seconds: u32,
}

/// What a request asks for: a preset and/or explicit fields, each optional. Explicit fields
/// override the preset's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecRequest {
    /// A preset name.
    pub preset: Option<String>,
    /// A model id.
    pub model: Option<String>,
    /// A size such as `1280x720`, unparsed.
    pub size: Option<String>,
    /// A duration in seconds, unparsed (`"8"`, `"8s"` is refused).
    pub seconds: Option<String>,
}

/// Which field of a request is wrong, and what is allowed instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The request field at fault: `preset`, `model`, `size` or `seconds`.
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl SpecError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Why a catalogue is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid catalogue: {0}")]
pub struct CatalogueError(String);

/// The models, sizes, durations and presets a deployment offers.
///
/// Build one with [`Catalogue::new`] (which checks it) or take [`Catalogue::default`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Catalogue {
    models: Vec<ModelOffer>,
    presets: Vec<Preset>,
    default_preset: String,
}

/// The serialised form of a catalogue, as found in configuration.
#[derive(Debug, Clone, Deserialize)]
struct CatalogueData {
    models: Vec<ModelOffer>,
    presets: Vec<Preset>,
    default_preset: String,
}

impl<'de> Deserialize<'de> for Catalogue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let d = CatalogueData::deserialize(deserializer)?;
        Self::new(d.models, d.presets, d.default_preset).map_err(serde::de::Error::custom)
    }
}

impl Catalogue {
    /// A checked catalogue: at least one model, each with at least one size and duration, unique
    /// model and preset names, every preset valid for its model, and the default preset present.
    pub fn new(
        models: Vec<ModelOffer>,
        presets: Vec<Preset>,
        default_preset: impl Into<String>,
    ) -> Result<Self, CatalogueError> {
        let default_preset = default_preset.into();
        if models.is_empty() {
            return Err(CatalogueError("it offers no model".into()));
        }
        for (i, m) in models.iter().enumerate() {
            if m.id.trim().is_empty() {
                return Err(CatalogueError("a model has an empty id".into()));
            }
            if m.sizes.is_empty() || m.seconds.is_empty() {
                return Err(CatalogueError(format!(
                    "model `{}` needs at least one size and one duration",
                    m.id
                )));
            }
            if m.seconds.contains(&0) {
                return Err(CatalogueError(format!(
                    "model `{}` lists a duration of 0 seconds",
                    m.id
                )));
            }
            if models[..i].iter().any(|o| o.id == m.id) {
                return Err(CatalogueError(format!("model `{}` is listed twice", m.id)));
            }
        }
        for (i, p) in presets.iter().enumerate() {
            if presets[..i].iter().any(|o| o.name == p.name) {
                return Err(CatalogueError(format!(
                    "preset `{}` is listed twice",
                    p.name
                )));
            }
            let model = models.iter().find(|m| m.id == p.model).ok_or_else(|| {
                CatalogueError(format!(
                    "preset `{}` names model `{}`, which is not offered",
                    p.name, p.model
                ))
            })?;
            if !model.sizes.contains(&p.size) || !model.seconds.contains(&p.seconds) {
                return Err(CatalogueError(format!(
                    "preset `{}` asks {} for {} s, which model `{}` does not allow",
                    p.name, p.size, p.seconds, p.model
                )));
            }
        }
        if !presets.iter().any(|p| p.name == default_preset) {
            return Err(CatalogueError(format!(
                "the default preset `{default_preset}` is not defined"
            )));
        }
        Ok(Self {
            models,
            presets,
            default_preset,
        })
    }

    /// The models offered.
    pub fn models(&self) -> &[ModelOffer] {
        &self.models
    }

    /// The presets offered.
    pub fn presets(&self) -> &[Preset] {
        &self.presets
    }

    /// The preset used when a request names neither a preset nor a model.
    pub fn default_preset(&self) -> &Preset {
        self.preset(&self.default_preset)
            .expect("Catalogue::new checked that the default preset exists")
    }

    /// A preset by name.
    pub fn preset(&self, name: &str) -> Option<&Preset> {
        self.presets.iter().find(|p| p.name == name)
    }

    /// A model by id.
    pub fn model(&self, id: &str) -> Option<&ModelOffer> {
        self.models.iter().find(|m| m.id == id)
    }

    /// Resolves a request into a spec, or says which field is wrong and what is allowed.
    ///
    /// The starting point is the named preset, else the named model's defaults, else the default
    /// preset; explicit `model`, `size` and `seconds` then override it. When the model changes
    /// away from the preset's and no size or duration is given, the new model's defaults apply.
    pub fn resolve(&self, req: &SpecRequest) -> Result<VideoSpec, SpecError> {
        let base = match &req.preset {
            Some(name) => Some(self.preset(name).ok_or_else(|| {
                SpecError::new(
                    "preset",
                    format!(
                        "unknown preset `{name}`; allowed: {}",
                        join(self.presets.iter().map(|p| &p.name))
                    ),
                )
            })?),
            None if req.model.is_none() => Some(self.default_preset()),
            None => None,
        };
        let model_id = req
            .model
            .as_deref()
            .or(base.map(|p| p.model.as_str()))
            .unwrap_or_default();
        let model = self.model(model_id).ok_or_else(|| {
            SpecError::new(
                "model",
                format!(
                    "unknown model `{model_id}`; allowed: {}",
                    join(self.models.iter().map(|m| &m.id))
                ),
            )
        })?;
        // A preset's size and duration carry over only while the model is the preset's own.
        let base = base.filter(|p| p.model == model.id);

        let size = match &req.size {
            Some(raw) => {
                let size: VideoSize = raw.trim().parse().map_err(|e| SpecError::new("size", e))?;
                if !model.sizes.contains(&size) {
                    return Err(SpecError::new(
                        "size",
                        format!(
                            "model `{}` does not offer {size}; allowed: {}",
                            model.id,
                            join(model.sizes.iter())
                        ),
                    ));
                }
                size
            }
            None => base.map(|p| p.size).unwrap_or(model.sizes[0]),
        };
        let seconds = match &req.seconds {
            Some(raw) => {
                let raw = raw.trim();
                let seconds: u32 = raw
                    .parse()
                    .ok()
                    .filter(|_| raw.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        SpecError::new(
                            "seconds",
                            format!("`{raw}` is not a whole number of seconds"),
                        )
                    })?;
                if !model.seconds.contains(&seconds) {
                    return Err(SpecError::new(
                        "seconds",
                        format!(
                            "model `{}` does not offer {seconds} s; allowed: {}",
                            model.id,
                            join(model.seconds.iter())
                        ),
                    ));
                }
                seconds
            }
            None => base.map(|p| p.seconds).unwrap_or(model.seconds[0]),
        };
        Ok(VideoSpec {
            model: model.id.clone(),
            size,
            seconds,
        })
    }
}

fn join<T: fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

impl Default for Catalogue {
    /// OpenAI's `sora-2` and `sora-2-pro`, with presets `draft`, `standard` (the default) and
    /// `pro`.
    fn default() -> Self {
        let size = |w, h| VideoSize::new(w, h).expect("built-in sizes are valid");
        let base_sizes = vec![size(1280, 720), size(720, 1280)];
        let mut pro_sizes = base_sizes.clone();
        pro_sizes.extend([size(1792, 1024), size(1024, 1792)]);
        let models = vec![
            ModelOffer {
                id: "sora-2".into(),
                sizes: base_sizes,
                seconds: vec![4, 8, 12],
            },
            ModelOffer {
                id: "sora-2-pro".into(),
                sizes: pro_sizes,
                seconds: vec![4, 8, 12],
            },
        ];
        let preset = |name: &str, description: &str, model: &str, size, seconds| Preset {
            name: name.into(),
            description: description.into(),
            model: model.into(),
            size,
            seconds,
        };
        let presets = vec![
            preset(
                "draft",
                "Fast and cheap: 4 s landscape from sora-2",
                "sora-2",
                size(1280, 720),
                4,
            ),
            preset(
                "standard",
                "8 s landscape from sora-2",
                "sora-2",
                size(1280, 720),
                8,
            ),
            preset(
                "pro",
                "12 s high-resolution landscape from sora-2-pro",
                "sora-2-pro",
                size(1792, 1024),
                12,
            ),
        ];
        Self::new(models, presets, "standard").expect("the built-in catalogue is consistent")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(
        preset: Option<&str>,
        model: Option<&str>,
        size: Option<&str>,
        seconds: Option<&str>,
    ) -> SpecRequest {
        SpecRequest {
            preset: preset.map(Into::into),
            model: model.map(Into::into),
            size: size.map(Into::into),
            seconds: seconds.map(Into::into),
        }
    }

    fn spec(model: &str, size: &str, seconds: u32) -> VideoSpec {
        VideoSpec {
            model: model.into(),
            size: size.parse().unwrap(),
            seconds,
        }
    }

    #[test]
    fn size_parses_and_prints() {
        let s: VideoSize = "1280x720".parse().unwrap();
        assert_eq!((s.width(), s.height()), (1280, 720));
        assert_eq!(s.to_string(), "1280x720");
        for bad in [
            "", "1280", "1280x", "x720", "1280X720", "-1x5", "0x720", "99999x1", "1e3x5", " 1x1",
        ] {
            assert!(
                bad.parse::<VideoSize>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn empty_request_takes_the_default_preset() {
        let c = Catalogue::default();
        assert_eq!(
            c.resolve(&SpecRequest::default()).unwrap(),
            spec("sora-2", "1280x720", 8)
        );
    }

    #[test]
    fn preset_gives_its_spec() {
        let c = Catalogue::default();
        assert_eq!(
            c.resolve(&req(Some("pro"), None, None, None)).unwrap(),
            spec("sora-2-pro", "1792x1024", 12)
        );
        assert_eq!(
            c.resolve(&req(Some("draft"), None, None, None)).unwrap(),
            spec("sora-2", "1280x720", 4)
        );
    }

    #[test]
    fn explicit_fields_override_the_preset() {
        let c = Catalogue::default();
        assert_eq!(
            c.resolve(&req(Some("standard"), None, Some("720x1280"), Some("12")))
                .unwrap(),
            spec("sora-2", "720x1280", 12)
        );
    }

    #[test]
    fn a_model_alone_takes_that_models_defaults() {
        let c = Catalogue::default();
        assert_eq!(
            c.resolve(&req(None, Some("sora-2-pro"), None, None))
                .unwrap(),
            spec("sora-2-pro", "1280x720", 4)
        );
    }

    #[test]
    fn changing_the_model_of_a_preset_drops_the_presets_size_and_duration() {
        let c = Catalogue::default();
        assert_eq!(
            c.resolve(&req(Some("pro"), Some("sora-2"), None, None))
                .unwrap(),
            spec("sora-2", "1280x720", 4)
        );
    }

    #[test]
    fn each_bad_field_is_named_with_what_is_allowed() {
        let c = Catalogue::default();
        let e = c
            .resolve(&req(Some("ultra"), None, None, None))
            .unwrap_err();
        assert_eq!(e.field, "preset");
        assert!(e.message.contains("draft, standard, pro"), "{e}");

        let e = c
            .resolve(&req(None, Some("veo-3"), None, None))
            .unwrap_err();
        assert_eq!(e.field, "model");
        assert!(e.message.contains("sora-2, sora-2-pro"), "{e}");

        let e = c
            .resolve(&req(None, None, Some("1792x1024"), None))
            .unwrap_err();
        assert_eq!(e.field, "size");
        assert!(e.message.contains("1280x720, 720x1280"), "{e}");

        let e = c.resolve(&req(None, None, Some("big"), None)).unwrap_err();
        assert_eq!(e.field, "size");

        let e = c.resolve(&req(None, None, None, Some("5"))).unwrap_err();
        assert_eq!(e.field, "seconds");
        assert!(e.message.contains("4, 8, 12"), "{e}");

        for bad in ["8s", "-4", "4.0", "", "+4"] {
            let e = c.resolve(&req(None, None, None, Some(bad))).unwrap_err();
            assert_eq!(e.field, "seconds", "{bad:?}");
        }
    }

    #[test]
    fn catalogue_loads_from_configuration_data_with_other_models() {
        let json = r#"{
            "models": [{"id": "veo-3", "sizes": ["1920x1080"], "seconds": [5, 10]}],
            "presets": [{"name": "hd", "model": "veo-3", "size": "1920x1080", "seconds": 10}],
            "default_preset": "hd"
        }"#;
        let c: Catalogue = serde_json::from_str(json).unwrap();
        assert_eq!(
            c.resolve(&SpecRequest::default()).unwrap(),
            spec("veo-3", "1920x1080", 10)
        );
        assert_eq!(c.default_preset().name, "hd");
    }

    #[test]
    fn inconsistent_catalogues_are_refused() {
        let m = || ModelOffer {
            id: "m".into(),
            sizes: vec!["10x10".parse().unwrap()],
            seconds: vec![4],
        };
        let p = |model: &str, seconds| Preset {
            name: "p".into(),
            description: String::new(),
            model: model.into(),
            size: "10x10".parse().unwrap(),
            seconds,
        };
        assert!(Catalogue::new(vec![], vec![], "p").is_err());
        assert!(Catalogue::new(vec![m()], vec![p("m", 4)], "p").is_ok());
        assert!(Catalogue::new(vec![m()], vec![p("m", 4)], "q").is_err());
        assert!(Catalogue::new(vec![m()], vec![p("x", 4)], "p").is_err());
        assert!(Catalogue::new(vec![m()], vec![p("m", 8)], "p").is_err());
        assert!(Catalogue::new(vec![m(), m()], vec![p("m", 4)], "p").is_err());
        assert!(Catalogue::new(vec![m()], vec![p("m", 4), p("m", 4)], "p").is_err());
        let mut empty = m();
        empty.sizes.clear();
        assert!(Catalogue::new(vec![empty], vec![], "p").is_err());
        let json = r#"{"models": [], "presets": [], "default_preset": "x"}"#;
        assert!(serde_json::from_str::<Catalogue>(json).is_err());
    }
}
