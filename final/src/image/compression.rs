//! How a layer blob is compressed, told from its first bytes (the media
//! type of a descriptor may lie or be missing: docker archives name
//! none), and a reader of its uncompressed tar.
//!
//! image-spec `layer.md` names three: `tar` (plain), `tar+gzip` and
//! `tar+zstd`. Both compressed formats allow several frames (members)
//! one after another, decompressed as one stream (`pigz`, `pzstd`).

use std::io::{self, BufRead, Read};

use oci_spec::image::MediaType;
use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// A layer's compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    Plain,
    /// gzip (RFC 1952), magic `1f 8b`.
    Gzip,
    /// Zstandard (RFC 8878), magic `28 b5 2f fd`.
    Zstd,
}

impl Compression {
    /// How many leading bytes [`Compression::detect`] looks at.
    pub const MAGIC_LEN: u64 = 4;

    /// The compression whose magic `head` starts with.
    pub fn detect(head: &[u8]) -> Compression {
        if crate::overlay::is_gzip(head) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::Plain
        }
    }

    /// The OCI media type of a layer so compressed.
    pub fn media_type(self) -> MediaType {
        match self {
            Compression::Plain => MediaType::ImageLayer,
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        }
    }

    /// The uncompressed stream of `blob`.
    pub fn decoder<'a, R: BufRead + 'a>(self, blob: R) -> Box<dyn Read + 'a> {
        match self {
            Compression::Plain => Box::new(blob),
            Compression::Gzip => {
                Box::new(flate2::bufread::MultiGzDecoder::new(blob))
            }
            Compression::Zstd => Box::new(Zstd::new(blob)),
        }
    }
}

/// A reader of every Zstandard frame of a stream, one after another,
/// skippable frames skipped (the metadata of `zstd:chunked` layers,
/// `pzstd`'s frame sizes).
///
/// A frame declares the window it needs, and the decoder keeps that much
/// output in memory: a few bytes of header could ask for terabytes.
/// ruzstd refuses windows over 100 MiB only when its decoder is reset
/// for a frame, not for its very first one, so the decoder here starts
/// on an empty frame and is reset for each real one.
struct Zstd<R: BufRead> {
    source: R,
    frame: FrameDecoder,
    in_frame: bool,
}

/// A complete, empty Zstandard frame: magic, a single-segment header of
/// content size 0, one last raw block of size 0.
const EMPTY_FRAME: [u8; 9] =
    [0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x00, 0x01, 0x00, 0x00];

impl<R: BufRead> Zstd<R> {
    fn new(source: R) -> Zstd<R> {
        let mut frame = FrameDecoder::new();
        // Cannot fail: a constant, well-formed header.
        let _ = frame.init(&EMPTY_FRAME[..]);
        Zstd {
            source,
            frame,
            in_frame: false,
        }
    }
}

fn invalid(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {error}"))
}

impl<R: BufRead> Read for Zstd<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if self.source.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.frame.reset(&mut self.source) {
                    Ok(()) => self.in_frame = true,
                    Err(FrameDecoderError::ReadFrameHeaderError(
                        ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        let length = u64::from(length);
                        let skipped = io::copy(
                            &mut (&mut self.source).take(length),
                            &mut io::sink(),
                        )?;
                        if skipped != length {
                            return Err(invalid(
                                "a skippable frame is cut short",
                            ));
                        }
                    }
                    Err(e) => return Err(invalid(e)),
                }
                continue;
            }
            while self.frame.can_collect() < buf.len()
                && !self.frame.is_finished()
            {
                let wanted = buf.len() - self.frame.can_collect();
                self.frame
                    .decode_blocks(
                        &mut self.source,
                        BlockDecodingStrategy::UptoBytes(wanted),
                    )
                    .map_err(invalid)?;
            }
            let n = self.frame.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // The frame's end: another may follow.
            self.in_frame = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(compression: Compression, bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        compression.decoder(bytes).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn each_format_is_told_by_its_magic_and_read_to_its_end() {
        let data = b"a tar, say".repeat(1000);
        let one = ruzstd::encoding::compress_to_vec(
            &data[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert_eq!(Compression::detect(&one), Compression::Zstd);
        assert_eq!(decode(Compression::Zstd, &one).unwrap(), data);
        // Two frames, one stream.
        let two = [one.clone(), one.clone()].concat();
        assert_eq!(
            decode(Compression::Zstd, &two).unwrap(),
            [data.clone(), data.clone()].concat()
        );
        // Cut short: an error, not a short read taken for the end.
        assert!(decode(Compression::Zstd, &one[..one.len() / 2]).is_err());
        let mut gz = flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        );
        std::io::Write::write_all(&mut gz, &data).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(Compression::detect(&gz), Compression::Gzip);
        assert_eq!(decode(Compression::Gzip, &gz).unwrap(), data);
        assert_eq!(Compression::detect(b"plain"), Compression::Plain);
        assert_eq!(
            Compression::Zstd.media_type().to_string(),
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        // A skippable frame (magic 0x184D2A50, a length, that many bytes)
        // before a real one: skipped.
        let skippable =
            [&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3][..], &one].concat();
        assert_eq!(decode(Compression::Zstd, &skippable).unwrap(), data);
    }

    #[test]
    fn a_frame_that_asks_for_a_huge_window_is_refused() {
        // Header: not single-segment, window descriptor 0xf8: exponent
        // 31, a window of 2^41 bytes (2 TiB); then a block. Refused
        // before anything is allocated.
        let bomb = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xf8, 0x03, 0x00, 0x00, 0x00];
        let error = decode(Compression::Zstd, &bomb).unwrap_err().to_string();
        assert!(error.contains("zstd"), "{error}");
        // The first frame of a stream as much as any later one.
        let one = ruzstd::encoding::compress_to_vec(
            &b"x".repeat(10)[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert!(
            decode(Compression::Zstd, &[&one[..], &bomb[..]].concat()).is_err()
        );
    }
}
