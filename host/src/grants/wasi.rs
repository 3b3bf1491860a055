//! A sidecar's stdout and stderr, split into lines and recorded in the pod's logs with the
//! sidecar's name, like a native container's output (bounded the same way: see `logs.rs`).

use std::sync::Arc;

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::logs::{LogWriter, Logs, Stream};

pub struct LogOutput {
    pub logs: Arc<Logs>,
    pub container: String,
    pub stream: Stream,
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LogWriter::new(
            self.logs.clone(),
            &self.container,
            self.stream,
        ))
    }
}
