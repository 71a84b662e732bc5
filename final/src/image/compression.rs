//! How a layer blob is compressed, told from its first bytes (the media
//! type of a descriptor may lie or be missing: docker archives name
//! none), and a reader of its uncompressed tar.
//!
//! image-spec `layer.md` names three: `tar` (plain), `tar+gzip` and
//! `tar+zstd`. Both compressed formats allow several frames (members)
//! one after another, decompressed as one stream (`pigz`, `pzstd`).

use std::io::{self, BufRead, Read};

use oci_spec::image::MediaType;
use ruzstd::decoding::StreamingDecoder;
use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};

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
            Compression::Zstd => Box::new(Zstd::Between(blob)),
        }
    }
}

/// A reader of every Zstandard frame of a stream, one after another.
enum Zstd<R: BufRead> {
    /// Before a frame (or at the end).
    Between(R),
    /// In one (boxed: the decoder's state is large).
    In(Box<StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>),
    /// After an error.
    Failed,
}

fn invalid(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {error}"))
}

impl<R: BufRead> Read for Zstd<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match std::mem::replace(self, Zstd::Failed) {
                Zstd::Between(mut source) => {
                    if source.fill_buf()?.is_empty() {
                        *self = Zstd::Between(source);
                        return Ok(0);
                    }
                    match StreamingDecoder::new(source) {
                        Ok(frame) => *self = Zstd::In(Box::new(frame)),
                        // A skippable frame carries no data: the decoder
                        // has read its header, and gave its source
                        // away; it cannot be skipped from here.
                        Err(FrameDecoderError::ReadFrameHeaderError(
                            ReadFrameHeaderError::SkipFrame { .. },
                        )) => {
                            return Err(invalid(
                                "skippable frames are not supported",
                            ));
                        }
                        Err(e) => return Err(invalid(e)),
                    }
                }
                Zstd::In(mut frame) => {
                    let n = frame.read(buf)?;
                    if n > 0 || buf.is_empty() {
                        *self = Zstd::In(frame);
                        return Ok(n);
                    }
                    // The frame's end: another may follow.
                    *self = Zstd::Between(frame.into_inner());
                }
                Zstd::Failed => {
                    return Err(invalid("the stream failed before"));
                }
            }
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
    }
}
