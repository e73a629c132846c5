//! The sinks built into the engine: JSON lines to stdout or to a file.

mod file;
mod jsonl;
mod stdout;

pub use file::FileSink;
pub use stdout::StdoutSink;
