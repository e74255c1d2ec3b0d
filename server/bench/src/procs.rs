//! The processes under test (the server, the forwarder), what /proc says
//! about them, and where everything runs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::{Opts, Result};

/// How long a child may take to print `listening on ADDR`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where things run and with which binaries.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The server binary under test.
    pub(crate) server: PathBuf,
    /// This binary, run again as `bench forwarder`.
    bench: PathBuf,
    /// `target/`, where results and the server's log go.
    pub(crate) target_dir: PathBuf,
    /// `Some((load generator CPU, CPU for the process under test))` when
    /// `taskset` works and there are two CPUs to split.
    pub(crate) pin: Option<(usize, usize)>,
    /// Clock ticks per second, the unit of /proc/PID/stat's CPU times.
    ticks: f64,
    /// CPUs this process may use, before pinning.
    pub(crate) cpus: usize,
}

impl Plan {
    pub(crate) fn new(opts: &Opts) -> Result<Self> {
        let bench = std::env::current_exe()?;
        let bin_dir = bench.parent().ok_or("this binary has no directory")?.to_path_buf();
        // target/release/bench → target/
        let target_dir = bin_dir.parent().map_or_else(|| bin_dir.clone(), Path::to_path_buf);
        let server = match &opts.server {
            Some(path) => path.clone(),
            None => {
                let path = bin_dir.join("webrtc-p2p-server");
                build_server_if_stale(&path, &bench)?;
                path
            }
        };
        if !server.exists() {
            return Err(format!("no server binary at {} (cargo build --release)", server.display()).into());
        }
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        // The process under test on CPU 0, the load generator on CPU 1.
        let pin = (!opts.no_pin && cpus >= 2 && taskset_works()).then_some((1, 0));
        Ok(Self { server, bench, target_dir, pin, ticks: clock_ticks(), cpus })
    }

    /// Pins this process (and the threads it starts later) to its CPU.
    pub(crate) fn pin_self(&self) {
        if let Some((mine, _)) = self.pin {
            let pid = std::process::id().to_string();
            let _ = Command::new("taskset")
                .args(["-a", "-p", "-c", &mine.to_string(), &pid])
                .stdout(Stdio::null())
                .status();
        }
    }

    /// Starts the server under test on 127.0.0.1:0, with its default limits
    /// but for two that would cap the load itself: the per-connection rate
    /// limit (raised, so that it is still checked on every message) and the
    /// connection cap.
    pub(crate) fn start_server(&self) -> Result<Child> {
        self.start_server_with(&[])
    }

    /// [`start_server`](Self::start_server) with `extra` flags (its log
    /// appended to the same file).
    pub(crate) fn start_server_with(&self, extra: &[&str]) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.target_dir.join("bench").join("server.log"))?;
        let mut command = self.command(&self.server);
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(["--rate-limit", "1000000", "--max-connections", "1000000"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stderr(log);
        Child::start(command, "server")
    }

    /// Starts `redis_server` on a free loopback port, without persistence,
    /// on the CPU of the process under test (it is part of the service).
    pub(crate) fn start_redis(&self, redis_server: &Path) -> Result<Child> {
        // A free port: bound, then released for redis-server to take.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = self.command(redis_server);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Child::start_redis(command, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Starts the bare forwarder on 127.0.0.1:0.
    pub(crate) fn start_forwarder(&self) -> Result<Child> {
        let mut command = self.command(&self.bench);
        command.args(["forwarder", "--listen", "127.0.0.1:0"]).stderr(Stdio::inherit());
        Child::start(command, "forwarder")
    }

    fn command(&self, program: &Path) -> Command {
        match self.pin {
            Some((_, theirs)) => {
                let mut command = Command::new("taskset");
                command.args(["-c", &theirs.to_string()]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// CPU seconds (user + system) `pid` has used so far.
    pub(crate) fn cpu_seconds(&self, pid: u32) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces): state is
        // field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(") ").ok_or("odd /proc/PID/stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11).ok_or("no utime")?.parse()?;
        let stime: f64 = fields.get(12).ok_or("no stime")?.parse()?;
        Ok((utime + stime) / self.ticks)
    }
}

/// What a process has done so far, as /proc counts it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    /// CPU seconds, user + system.
    pub(crate) cpu: f64,
    /// Context switches of all its threads, voluntary and not.
    pub(crate) switches: u64,
}

impl std::ops::Sub for Counters {
    type Output = Self;
    fn sub(self, earlier: Self) -> Self {
        Self { cpu: self.cpu - earlier.cpu, switches: self.switches.saturating_sub(earlier.switches) }
    }
}

impl std::ops::Add for Counters {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self { cpu: self.cpu + other.cpu, switches: self.switches + other.switches }
    }
}

impl Plan {
    /// The counters of every process in `pids`, added up.
    pub(crate) fn counters_of(&self, pids: &[u32]) -> Result<Counters> {
        pids.iter().try_fold(Counters::default(), |sum, pid| Ok(sum + self.counters(*pid)?))
    }

    /// `pid`'s counters now.
    pub(crate) fn counters(&self, pid: u32) -> Result<Counters> {
        let mut switches = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            // A thread may end between listing and reading: it no longer counts.
            let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else { continue };
            for line in status.lines() {
                let count = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"));
                if let Some(n) = count {
                    switches += n.trim().parse::<u64>()?;
                }
            }
        }
        Ok(Counters { cpu: self.cpu_seconds(pid)?, switches })
    }
}

/// `pid`'s resident set in KiB, from /proc/PID/status.
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("odd VmRSS")?.parse()?)
}

/// Open file descriptors of `pid`.
pub(crate) fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// What a figure was measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// webrtc-p2p-server.
    Server,
    /// The bare forwarder.
    Forwarder,
}

impl Target {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Forwarder => "forwarder",
        }
    }
}

/// A child process, killed when dropped.
#[derive(Debug)]
pub(crate) struct Child {
    child: std::process::Child,
    /// Its process id (taskset execs the program, so this is the program's).
    pub(crate) pid: u32,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
}

impl Child {
    fn start(mut command: Command, name: &str) -> Result<Self> {
        let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        // Reads the first line, then drains stdout until the child exits.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the {name} did not print `listening on ADDR`").into());
            }
        };
        let addr = line.strip_prefix("listening on ").ok_or_else(|| format!("{name} said {line:?}"))?.parse()?;
        Ok(Self { pid: child.id(), child, addr })
    }

    /// A redis-server started by `command`: ready once it accepts a
    /// connection at `addr`.
    fn start_redis(mut command: Command, addr: SocketAddr) -> Result<Self> {
        let child = command.stdin(Stdio::null()).spawn()?;
        let mut redis = Self { pid: child.id(), child, addr };
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(addr).is_err() {
            if std::time::Instant::now() > deadline || redis.child.try_wait()?.is_some() {
                return Err(format!("redis-server did not listen on {addr} (apt-get install redis-server)").into());
            }
            // Nothing to wait on but the port: redis-server prints no address.
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(redis)
    }

    /// The URL a client of pair `pair` connects to (the server ignores the
    /// query; the forwarder pairs by it).
    pub(crate) fn url(&self, pair: usize) -> String {
        format!("ws://{}/ws?pair={pair}", self.addr)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises this process's soft open-files limit to its hard limit (children
/// inherit it): 19,000 connections need 19,000 descriptors on each side.
pub(crate) fn raise_open_files_limit() {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else { return };
    let Some(line) = limits.lines().find(|l| l.starts_with("Max open files")) else { return };
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    if let [soft, hard] = numbers[..]
        && soft != hard
    {
        let pid = std::process::id().to_string();
        let nofile = format!("--nofile={hard}:{hard}");
        // `prlimit` (util-linux) sets it without unsafe code here.
        let _ = Command::new("prlimit").args(["--pid", &pid, &nofile]).status();
    }
}

/// This process's soft open-files limit.
pub(crate) fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn taskset_works() -> bool {
    Command::new("taskset").args(["-c", "1", "true"]).status().is_ok_and(|s| s.success())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Under `cargo run`, builds the server binary when it is missing or older
/// than this binary, so that one command measures the current code.
fn build_server_if_stale(server: &Path, bench: &Path) -> Result<()> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let stale = match (modified(server), modified(bench)) {
        (Some(s), Some(b)) => s < b,
        _ => true,
    };
    let Some(cargo) = std::env::var_os("CARGO") else { return Ok(()) };
    if !stale {
        return Ok(());
    }
    let release = bench.parent().and_then(Path::file_name).is_some_and(|d| d == "release");
    let mut command = Command::new(cargo);
    command.args(["build", "-p", "webrtc-p2p-server", "--bin", "webrtc-p2p-server"]);
    if release {
        command.arg("--release");
    }
    eprintln!("bench: building the server binary");
    let status = command.status()?;
    if !status.success() {
        return Err("building the server failed".into());
    }
    Ok(())
}
