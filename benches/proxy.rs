//! `make bench`: what proxying kernel websockets costs, the gateway against nginx in front of
//! the same runner, and against talking to the runner directly.
//!
//! One `cellgate runner`, one `cellgate gateway` over it, and nginx (TLS, `least_conn`,
//! websocket upgrade; `benches/nginx-proxy.conf`) over it too. The client speaks plain
//! websocket to the runner and TLS to both proxies, so "added" is what a TLS edge adds. The
//! requests are `kernel_info_request`s, which the runner answers itself (status busy, the
//! reply, status idle) without a language driver, so the numbers are about the transport.
//!
//! - round trip: one connection, one request at a time, p50 and p99;
//! - messages/s: four connections to four kernels, 32 requests in flight on each;
//! - idle websockets: N connections opened and left idle, the proxy's resident memory with
//!   them open (N is at most about 9,900 here: the gateway holds two descriptors per
//!   websocket and this machine's hard limit is 20,000; `CELLGATE_BENCH_IDLE` sets it).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use futures_util::SinkExt;
use support::client::tls_config;
use support::cluster::{runner_get, GatewayProcess, RunnerProcess, SECRET};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

const WARMUP: usize = 300;
/// Round trips per path per round; the paths take turns, so drift on a busy machine hits
/// them alike.
const ROUND_TRIPS: usize = 1000;
const ROUNDS: usize = 5;
const STREAMS: usize = 4;
const REQUESTS_PER_STREAM: usize = 5_000;
const WINDOW: usize = 32;
/// Every `kernel_info_request` is answered with three messages.
const FRAMES_PER_REQUEST: usize = 3;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where the client connects.
#[derive(Clone)]
enum Via {
    Direct { address: String },
    Gateway { address: String, token: String },
    Nginx { address: String },
}

impl Via {
    fn name(&self) -> &'static str {
        match self {
            Via::Direct { .. } => "direct to the runner (plain ws)",
            Via::Gateway { .. } => "cellgate gateway (TLS)",
            Via::Nginx { .. } => "nginx least_conn (TLS)",
        }
    }

    async fn connect(&self, kernel: &str) -> Socket {
        let path = format!("/api/kernels/{kernel}/channels");
        let (url, address, connector) = match self {
            Via::Direct { address } => (format!("ws://{address}{path}"), address, Connector::Plain),
            Via::Gateway { address, .. } | Via::Nginx { address } => (
                format!("wss://{address}{path}"),
                address,
                Connector::Rustls(tls_config()),
            ),
        };
        let mut request = url.into_client_request().unwrap();
        let headers = request.headers_mut();
        match self {
            Via::Direct { .. } => {
                headers.insert("x-cellgate-runner-secret", SECRET.parse().unwrap());
            }
            Via::Gateway { token, .. } => {
                headers.insert("authorization", format!("token {token}").parse().unwrap());
            }
            Via::Nginx { .. } => {}
        }
        let tcp = TcpStream::connect(address.as_str()).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (socket, _) =
            tokio_tungstenite::client_async_tls_with_config(request, tcp, None, Some(connector))
                .await
                .unwrap_or_else(|error| panic!("{}: websocket to {address}: {error}", self.name()));
        socket
    }
}

fn kernel_info(n: usize) -> Message {
    Message::Text(format!(
        r#"{{"header":{{"msg_id":"bench-{n}","msg_type":"kernel_info_request","session":"bench","username":"bench","date":"","version":"5.3"}},"parent_header":{{}},"metadata":{{}},"content":{{}},"channel":"shell"}}"#
    ))
}

/// Reads until `count` data frames have arrived.
async fn data_frames(socket: &mut Socket, count: usize) {
    let mut seen = 0;
    while seen < count {
        match socket.next().await {
            Some(Ok(Message::Text(_) | Message::Binary(_))) => seen += 1,
            Some(Ok(_)) => {}
            other => panic!("the websocket ended: {other:?}"),
        }
    }
}

async fn round_trips(socket: &mut Socket, count: usize, samples: &mut Vec<Duration>) {
    for n in 0..count {
        let started = Instant::now();
        socket.send(kernel_info(n)).await.unwrap();
        data_frames(socket, FRAMES_PER_REQUEST).await;
        samples.push(started.elapsed());
    }
}

/// Messages received per second with [`WINDOW`] requests in flight on each of the streams.
async fn throughput(path: &Via, kernels: &[String]) -> f64 {
    let mut sockets = Vec::new();
    for kernel in kernels {
        sockets.push(path.connect(kernel).await);
    }
    let started = Instant::now();
    let streams = sockets.into_iter().map(|socket| async move {
        let (mut tx, mut rx) = socket.split();
        let window = Arc::new(Semaphore::new(WINDOW));
        let credit = window.clone();
        let writer = async move {
            for n in 0..REQUESTS_PER_STREAM {
                credit.acquire().await.unwrap().forget();
                tx.send(kernel_info(n)).await.unwrap();
            }
            tx
        };
        let reader = async move {
            let mut frames = 0;
            while frames < REQUESTS_PER_STREAM * FRAMES_PER_REQUEST {
                match rx.next().await {
                    Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                        frames += 1;
                        if frames % FRAMES_PER_REQUEST == 0 {
                            window.add_permits(1);
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("the websocket ended: {other:?}"),
                }
            }
            rx
        };
        let (tx, rx) = tokio::join!(writer, reader);
        let mut socket = tx.reunite(rx).unwrap();
        let _ = socket.close(None).await;
    });
    futures_util::future::join_all(streams).await;
    let frames = kernels.len() * REQUESTS_PER_STREAM * FRAMES_PER_REQUEST;
    frames as f64 / started.elapsed().as_secs_f64()
}

/// Resident memory of `pid` and of its children, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let own = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|line| line.starts_with("VmRSS:"))
                    .and_then(|line| line.split_whitespace().nth(1))
                    .and_then(|kib| kib.parse().ok())
            })
            .unwrap_or(0)
    };
    let children: u64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let after_name = stat.rsplit_once(')')?.1.to_owned();
                    after_name.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .map(own)
        .sum();
    own(pid) + children
}

async fn runner_sessions(runner: &RunnerProcess) -> u64 {
    runner_get(&runner.url, "/api/runner").await["sessions"]
        .as_u64()
        .unwrap()
}

/// Opens `count` idle websockets through `path`; returns the proxy's RSS before and with
/// them open, in KiB, and how many it held.
async fn idle_memory(
    path: &Via,
    kernel: &str,
    count: usize,
    proxy_pid: u32,
    runner: &RunnerProcess,
) -> (u64, u64) {
    let before = rss_kib(proxy_pid);
    let sockets: Vec<Socket> = stream::iter(0..count)
        .map(|_| path.connect(kernel))
        .buffer_unordered(64)
        .collect()
        .await;
    // Every websocket reached the runner, so the proxy holds both ends of each.
    let deadline = Instant::now() + Duration::from_secs(60);
    while runner_sessions(runner).await < count as u64 {
        assert!(
            Instant::now() < deadline,
            "not every websocket reached the runner"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let with = rss_kib(proxy_pid);
    drop(sockets);
    let deadline = Instant::now() + Duration::from_secs(120);
    while runner_sessions(runner).await > 0 {
        assert!(Instant::now() < deadline, "the websockets did not close");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (before, with)
}

struct Nginx {
    child: Child,
    prefix: PathBuf,
    address: String,
}

impl Nginx {
    /// SIGTERM, nginx's fast stop, and a wait for the master, which ends its workers first;
    /// killing the master outright would leave the workers behind.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("nginx did not stop within 30 s; killing it");
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

async fn start_nginx(binary: &Path, runner: &RunnerProcess) -> Nginx {
    let prefix = std::env::temp_dir().join(format!("cellgate-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&prefix).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(prefix.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(prefix.join("key.pem"), key.serialize_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let template = include_str!("nginx-proxy.conf");
    let config = template
        .replace("{{PREFIX}}", prefix.to_str().unwrap())
        .replace("{{PORT}}", &port.to_string())
        .replace("{{RUNNER}}", runner.url.trim_start_matches("http://"))
        .replace("{{SECRET}}", SECRET)
        .replace("{{CERT}}", prefix.join("cert.pem").to_str().unwrap())
        .replace("{{KEY}}", prefix.join("key.pem").to_str().unwrap());
    std::fs::write(prefix.join("nginx.conf"), config).unwrap();
    let child = Command::new(binary)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("nginx starts");
    let address = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&address).await.is_err() {
        assert!(Instant::now() < deadline, "nginx did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Nginx {
        child,
        prefix,
        address,
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

// One client thread, so the client takes as little CPU from the proxies as it can.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let idle: usize = std::env::var("CELLGATE_BENCH_IDLE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(9_000);
    let runner = RunnerProcess::start(&[]).await;
    let gateway = GatewayProcess::start(&[&runner.url], &["--max-connections", "30000"]).await;
    let client = gateway.client();
    // Each latency connection has a kernel of its own: a kernel's status messages go to
    // every connection attached to it.
    let mut latency_kernels = Vec::new();
    for _ in 0..3 {
        latency_kernels.push(client.start_kernel("bash").await);
    }
    let idle_kernel = client.start_kernel("bash").await;
    let mut stream_kernels = Vec::new();
    for _ in 0..STREAMS {
        stream_kernels.push(client.start_kernel("bash").await);
    }

    let direct = Via::Direct {
        address: runner.url.trim_start_matches("http://").to_owned(),
    };
    let through_gateway = Via::Gateway {
        address: gateway.address.clone(),
        token: gateway.token.clone(),
    };
    let nginx = match nginx_binary() {
        Some(binary) => Some(start_nginx(&binary, &runner).await),
        None => {
            println!("nginx is not installed (apt-get install nginx): its rows are missing");
            None
        }
    };
    let through_nginx = nginx.as_ref().map(|nginx| Via::Nginx {
        address: nginx.address.clone(),
    });

    println!("cellgate websocket proxying against nginx, one runner behind both, on this machine");
    println!();

    // Memory first, while both proxies are fresh.
    let mut memory = Vec::new();
    let (before, with) = idle_memory(
        &through_gateway,
        &idle_kernel,
        idle,
        gateway.pid() as u32,
        &runner,
    )
    .await;
    memory.push((through_gateway.name(), before, with));
    if let (Some(path), Some(nginx)) = (&through_nginx, &nginx) {
        let pid = nginx.child.id().unwrap();
        let (before, with) = idle_memory(path, &idle_kernel, idle, pid, &runner).await;
        memory.push((path.name(), before, with));
    }

    let mut paths = vec![direct.clone(), through_gateway.clone()];
    paths.extend(through_nginx.clone());
    let mut sockets = Vec::new();
    for (path, kernel) in paths.iter().zip(&latency_kernels) {
        let mut socket = path.connect(kernel).await;
        round_trips(&mut socket, WARMUP, &mut Vec::new()).await;
        sockets.push(socket);
    }
    let mut latency = vec![Vec::new(); paths.len()];
    let mut rates = vec![Vec::new(); paths.len()];
    for _ in 0..ROUNDS {
        for (socket, samples) in sockets.iter_mut().zip(&mut latency) {
            round_trips(socket, ROUND_TRIPS, samples).await;
        }
        for (path, rate) in paths.iter().zip(&mut rates) {
            rate.push(throughput(path, &stream_kernels).await);
        }
    }
    for samples in &mut latency {
        samples.sort();
    }
    // The median round of each path.
    let rates: Vec<f64> = rates
        .into_iter()
        .map(|mut rounds| {
            rounds.sort_by(f64::total_cmp);
            rounds[rounds.len() / 2]
        })
        .collect();

    let direct_p50 = ms(percentile(&latency[0], 0.5));
    println!("| path | round trip p50 | p99 | added p50 | messages/s |");
    println!("|---|---|---|---|---|");
    for ((path, samples), rate) in paths.iter().zip(&latency).zip(&rates) {
        let p50 = ms(percentile(samples, 0.5));
        println!(
            "| {} | {p50:.3} ms | {:.3} ms | {} | {rate:.0} |",
            path.name(),
            ms(percentile(samples, 0.99)),
            if matches!(path, Via::Direct { .. }) {
                "-".to_owned()
            } else {
                format!("{:+.3} ms", p50 - direct_p50)
            },
        );
    }
    println!();
    println!(
        "round trip: {} kernel_info requests one at a time per path, the paths taking turns in \
         {ROUNDS} rounds; messages/s: {STREAMS} connections, {WINDOW} requests in flight \
         each, 3 messages per request, the median of {ROUNDS} rounds",
        ROUNDS * ROUND_TRIPS
    );
    println!();
    println!("| proxy | idle websockets | RSS before | RSS with them open | per websocket |");
    println!("|---|---|---|---|---|");
    for (name, before, with) in memory {
        println!(
            "| {name} | {idle} | {:.1} MiB | {:.1} MiB | {:.1} KiB |",
            before as f64 / 1024.0,
            with as f64 / 1024.0,
            with.saturating_sub(before) as f64 / idle as f64,
        );
    }
    println!();
    println!(
        "RSS: the gateway process; nginx's master and workers together. The design's number \
         is 10,000; this machine's descriptor limit (20,000, two per proxied websocket) caps N."
    );
    if let Some(nginx) = nginx {
        nginx.stop().await;
    }
}
