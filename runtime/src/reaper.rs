//! The scoped reaper of library (daemon) mode: it reaps only the children
//! registered with it (the shims a [`crate::Runtime`] spawned), through the
//! `reap` strategy (`waitpid(pid, WNOHANG)` per pid, never `waitpid(-1)`), so
//! an embedder's own children keep their exit statuses. A background thread
//! polls the registered pidfds plus a wake pipe, so reaping is prompt and
//! shutdown is immediate. Registration is an RAII handle: dropping it before
//! the child exits detaches it (still reaped, status discarded).

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::ExitStatus;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

use crate::pid::Pid;

struct Slot {
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
    detached: bool,
    /// Exited but reaped by someone else (a non-scoped waitpid elsewhere).
    lost: bool,
}

#[derive(Default)]
struct Table {
    slots: HashMap<Pid, Slot>,
    shutdown: bool,
}

struct Inner {
    table: Mutex<Table>,
    changed: Condvar,
    wake_tx: OwnedFd,
    reap: ReapFn,
}

impl Inner {
    fn wake(&self) {
        let _ = rustix::io::write(&self.wake_tx, &[1]);
    }

    /// Waits up to `timeout` (or until shutdown) for `done` to decide:
    /// `done` sees the table after every change and returns `Some` once
    /// there is an answer; `None` if time ran out first.
    fn wait_for<T>(&self, timeout: Duration, done: impl Fn(&Table) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut table = self.table.lock().expect("reaper lock");
        loop {
            if let Some(answer) = done(&table) {
                return Some(answer);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || table.shutdown {
                return None;
            }
            table = self
                .changed
                .wait_timeout(table, left)
                .expect("reaper lock")
                .0;
        }
    }
}

/// How a reaper reaps: given the registered children whose pidfds polled
/// readable (exited), reap what it can and return their statuses. The pidfd
/// is what names the child: its number may already be someone else's.
pub type ReapFn = fn(&[(Pid, BorrowedFd<'_>)]) -> Vec<(Pid, ExitStatus)>;

/// A scoped reaper. Dropping it stops its thread promptly.
pub struct Reaper {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reaper").finish_non_exhaustive()
    }
}

/// Interest in one child's exit. Dropping it detaches the child.
pub struct Registration {
    pid: Pid,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("pid", &self.pid)
            .finish()
    }
}

/// Registration failed.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    /// The pidfd for the child could not be opened.
    #[error("pid {pid}: cannot open a pidfd")]
    Pidfd {
        /// The child.
        pid: Pid,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The wake pipe or thread could not be created.
    #[error("cannot start the reaper")]
    Start(#[source] std::io::Error),
}

impl Reaper {
    /// Starts a reaper thread that reaps with `reap`.
    pub fn new(reap: ReapFn) -> Result<Self, ReaperError> {
        let (rx, tx) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )
        .map_err(|e| ReaperError::Start(e.into()))?;
        let inner = Arc::new(Inner {
            table: Mutex::new(Table::default()),
            changed: Condvar::new(),
            wake_tx: tx,
            reap,
        });
        let thread_inner = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("refbox-reaper".into())
            .spawn(move || run(&thread_inner, rx))
            .map_err(ReaperError::Start)?;
        Ok(Reaper {
            inner,
            thread: Some(thread),
        })
    }

    /// Registers a child of this process (must not have been reaped yet).
    pub fn register(&self, pid: Pid) -> Result<Registration, ReaperError> {
        let pidfd =
            rustix::process::pidfd_open(pid.to_rustix(), rustix::process::PidfdFlags::empty())
                .map_err(|e| ReaperError::Pidfd {
                    pid,
                    source: e.into(),
                })?;
        self.inner.table.lock().expect("reaper lock").slots.insert(
            pid,
            Slot {
                pidfd,
                status: None,
                detached: false,
                lost: false,
            },
        );
        self.inner.wake();
        Ok(Registration {
            pid,
            inner: Arc::clone(&self.inner),
        })
    }

    /// Waits up to `timeout` until no registered child is left unreaped
    /// (claimed or detached); returns whether that happened in time.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.inner
            .wait_for(timeout, |t| {
                t.slots
                    .values()
                    .all(|s| s.status.is_some() || s.lost)
                    .then_some(())
            })
            .is_some()
    }

    /// Pids currently registered (exited but unclaimed ones included).
    pub fn registered(&self) -> Vec<Pid> {
        self.inner
            .table
            .lock()
            .expect("reaper lock")
            .slots
            .keys()
            .copied()
            .collect()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.inner.table.lock().expect("reaper lock").shutdown = true;
        self.inner.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Registration {
    /// The child's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits up to `timeout` for the child to be reaped; returns its status.
    pub fn wait(&self, timeout: Duration) -> Option<ExitStatus> {
        self.inner
            .wait_for(timeout, |t| match t.slots.get(&self.pid) {
                Some(Slot {
                    status: Some(status),
                    ..
                }) => Some(Some(*status)),
                Some(Slot { lost: true, .. }) | None => Some(None),
                Some(_) => None,
            })
            .flatten()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut table = self.inner.table.lock().expect("reaper lock");
        match table.slots.get_mut(&self.pid) {
            Some(slot) if slot.status.is_some() || slot.lost => {
                table.slots.remove(&self.pid);
            }
            Some(slot) => slot.detached = true,
            None => {}
        }
    }
}

fn run(inner: &Inner, wake_rx: OwnedFd) {
    loop {
        // Snapshot the pidfds still waiting (dup'd so the lock is not held while polling).
        let waiting: Vec<(Pid, OwnedFd)> = {
            let table = inner.table.lock().expect("reaper lock");
            if table.shutdown {
                return;
            }
            table
                .slots
                .iter()
                .filter(|(_, s)| s.status.is_none() && !s.lost)
                .filter_map(|(&pid, s)| s.pidfd.try_clone().ok().map(|fd| (pid, fd)))
                .collect()
        };
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(waiting.len() + 1);
        fds.push(PollFd::new(&wake_rx, PollFlags::IN));
        for (_, fd) in &waiting {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
        let ready: Vec<(Pid, BorrowedFd<'_>)> = waiting
            .iter()
            .zip(&fds[1..])
            .filter(|(_, p)| !p.revents().is_empty())
            .map(|((pid, fd), _)| (*pid, fd.as_fd()))
            .collect();
        drop(fds);
        let mut buf = [0u8; 64];
        while matches!(rustix::io::read(wake_rx.as_fd(), &mut buf), Ok(n) if n > 0) {}
        if ready.is_empty() {
            continue;
        }
        let reaped = (inner.reap)(&ready);
        let mut table = inner.table.lock().expect("reaper lock");
        for &(pid, status) in &reaped {
            match table.slots.get_mut(&pid) {
                Some(slot) if slot.detached => {
                    table.slots.remove(&pid);
                }
                Some(slot) => slot.status = Some(status),
                None => {}
            }
        }
        // A ready pid the strategy did not reap was reaped elsewhere (its
        // pidfd stays readable forever): mark it lost so we stop polling it.
        for (pid, _) in ready
            .iter()
            .filter(|(p, _)| !reaped.iter().any(|(r, _)| r == p))
        {
            let gone = table.slots.get(pid).is_some_and(|slot| {
                let opts = rustix::process::WaitIdOptions::EXITED
                    | rustix::process::WaitIdOptions::NOHANG
                    | rustix::process::WaitIdOptions::NOWAIT;
                matches!(
                    rustix::process::waitid(
                        rustix::process::WaitId::PidFd(slot.pidfd.as_fd()),
                        opts
                    ),
                    Err(rustix::io::Errno::CHILD)
                )
            });
            if gone {
                if table.slots.get(pid).is_some_and(|s| s.detached) {
                    table.slots.remove(pid);
                } else if let Some(slot) = table.slots.get_mut(pid) {
                    slot.lost = true;
                }
            }
        }
        inner.changed.notify_all();
    }
}
