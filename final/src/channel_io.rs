//! Blocking `Read` and `Write` over a tokio channel of byte chunks: how
//! the daemon and the CLI hand a stream between an async task (an HTTP
//! body) and a blocking thread (a tar reader or writer), with the
//! channel's bound as back-pressure.

use bytes::Bytes;
use tokio::sync::mpsc::{Receiver, Sender};

/// Reads the chunks an async task sends; the end of the channel is the
/// end of the stream.
#[derive(Debug)]
pub struct ChannelReader {
    rx: Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    /// A reader of what is sent into `rx`'s channel.
    pub fn new(rx: Receiver<Bytes>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(bytes) => self.current = bytes,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// Writes into a channel, blocking while the reader is behind; a reader
/// gone is a broken pipe.
#[derive(Debug)]
pub struct ChannelWriter {
    /// Where the bytes go.
    pub tx: Sender<Bytes>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| {
                std::io::Error::from(std::io::ErrorKind::BrokenPipe)
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
