//! Where log lines go: appended to a memory buffer under a lock held for a
//! copy, and written to stderr by a thread of its own every 50 ms. A request
//! never makes a system call or wakes a thread to log, and a slow or blocked
//! stderr never stalls one: past 16 MiB waiting, new lines are dropped and
//! counted, not waited for. A killed process loses at most its last 50 ms.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How often the buffered lines are written out.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// The most bytes that may wait to be written.
const MAX_PENDING: usize = 16 << 20;

/// A cheap, cloneable handle to the buffer; a `MakeWriter` for tracing.
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

struct Shared {
    pending: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    stop: AtomicBool,
}

/// Writes what is left and stops the writing thread when dropped.
pub struct FlushOnDrop {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BatchedWriter {
    /// A writer to `out` (stderr in the server) and the guard that flushes
    /// it at exit.
    pub fn new(mut out: impl Write + Send + 'static) -> (Self, FlushOnDrop) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(64 * 1024)),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || {
                    let mut spare = Vec::with_capacity(64 * 1024);
                    loop {
                        let stopping = shared.stop.load(Ordering::Acquire);
                        shared.write_out(&mut spare, &mut out);
                        if stopping {
                            return;
                        }
                        std::thread::park_timeout(FLUSH_EVERY);
                    }
                })
                .expect("the log thread starts")
        };
        (
            BatchedWriter {
                shared: Arc::clone(&shared),
            },
            FlushOnDrop {
                shared,
                thread: Some(thread),
            },
        )
    }

    /// Lines dropped since the last write-out because too much was waiting
    /// (the writing thread reports and resets it).
    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn write_out(&self, spare: &mut Vec<u8>, out: &mut impl Write) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut *pending, spare);
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                spare,
                "log: {dropped} lines dropped, stderr could not keep up"
            );
        }
        if !spare.is_empty() {
            let _ = out.write_all(spare);
            let _ = out.flush();
            spare.clear();
        }
    }
}

impl Write for &BatchedWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if pending.len() + line.len() > MAX_PENDING {
            drop(pending);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.extend_from_slice(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedWriter {
    type Writer = &'a BatchedWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_whole_in_order_and_all_by_exit() {
        let sink = Sink::default();
        let (writer, guard) = BatchedWriter::new(sink.clone());
        for i in 0..10_000 {
            (&writer)
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10_000);
        assert!(
            lines
                .iter()
                .enumerate()
                .all(|(i, l)| *l == format!("line {i}"))
        );
    }

    #[test]
    fn lines_are_written_without_waiting_for_exit() {
        let sink = Sink::default();
        let (writer, _guard) = BatchedWriter::new(sink.clone());
        (&writer).write_all(b"hello\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while sink.0.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "not written within 2 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn past_the_bound_lines_are_dropped_and_counted() {
        /// A stderr that never returns from its first write.
        struct Stuck(std::sync::mpsc::Sender<()>);
        impl Write for Stuck {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                let _ = self.0.send(());
                loop {
                    std::thread::park();
                }
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (entered, stuck) = std::sync::mpsc::channel();
        let (writer, guard) = BatchedWriter::new(Stuck(entered));
        // Its thread never ends: never join it, even if an assertion fails.
        std::mem::forget(guard);
        (&writer).write_all(b"first\n").unwrap();
        stuck
            .recv_timeout(Duration::from_secs(10))
            .expect("the writing thread took the first line");
        let line = vec![b'x'; 1 << 20];
        for _ in 0..40 {
            (&writer).write_all(&line).unwrap();
        }
        // 16 MiB wait; the other 24 lines are dropped and counted, and
        // writing never blocked.
        assert_eq!(writer.dropped(), 24);
    }
}
