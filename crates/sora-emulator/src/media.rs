//! The files served for every completed job, embedded in the binary (see `media/README.md`).

/// A 1.5 s, 320x180 H.264 MP4 with its `moov` box first (faststart): the `video` variant.
pub const VIDEO_MP4: &[u8] = include_bytes!("../media/video.mp4");

/// A 320x180 WebP of the first frame: the `thumbnail` variant.
pub const THUMBNAIL_WEBP: &[u8] = include_bytes!("../media/thumbnail.webp");

/// Six frames tiled 3x2 in a JPEG: the `spritesheet` variant.
pub const SPRITESHEET_JPEG: &[u8] = include_bytes!("../media/spritesheet.jpg");

/// One downloadable file of a completed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaVariant {
    /// The MP4 video (`variant=video`, the default).
    Video,
    /// The WebP thumbnail (`variant=thumbnail`).
    Thumbnail,
    /// The JPEG spritesheet (`variant=spritesheet`).
    Spritesheet,
}

impl MediaVariant {
    /// Parses the `variant` query parameter.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "video" => Some(Self::Video),
            "thumbnail" => Some(Self::Thumbnail),
            "spritesheet" => Some(Self::Spritesheet),
            _ => None,
        }
    }

    /// The embedded bytes of this variant.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Self::Video => VIDEO_MP4,
            Self::Thumbnail => THUMBNAIL_WEBP,
            Self::Spritesheet => SPRITESHEET_JPEG,
        }
    }

    /// The `Content-Type` this variant is served with.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Video => "video/mp4",
            Self::Thumbnail => "image/webp",
            Self::Spritesheet => "image/jpeg",
        }
    }
}

/// The image formats accepted as an input reference, recognised by their magic bytes.
pub(crate) fn image_kind(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
        Some("image/png")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The top-level MP4 boxes, in file order.
    fn boxes(mut data: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        while data.len() >= 8 {
            let size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
            names.push(String::from_utf8_lossy(&data[4..8]).into_owned());
            if size < 8 || size > data.len() {
                break;
            }
            data = &data[size..];
        }
        names
    }

    #[test]
    fn the_video_is_an_mp4_with_moov_before_mdat() {
        let names = boxes(VIDEO_MP4);
        assert_eq!(names.first().map(String::as_str), Some("ftyp"));
        let moov = names.iter().position(|n| n == "moov").unwrap();
        let mdat = names.iter().position(|n| n == "mdat").unwrap();
        assert!(moov < mdat, "not faststart: {names:?}");
    }

    #[test]
    fn the_images_have_the_right_magic_bytes() {
        assert_eq!(image_kind(THUMBNAIL_WEBP), Some("image/webp"));
        assert_eq!(image_kind(SPRITESHEET_JPEG), Some("image/jpeg"));
        assert_eq!(image_kind(VIDEO_MP4), None);
        assert_eq!(image_kind(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
    }

    #[test]
    fn the_media_stay_small() {
        let total = VIDEO_MP4.len() + THUMBNAIL_WEBP.len() + SPRITESHEET_JPEG.len();
        assert!(total < 64 * 1024, "{total} bytes");
    }
}
