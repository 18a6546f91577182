//! The multi-node cluster end to end: three Docker hosts on this machine (`cluster/up.sh`,
//! containers with their own engine, GlusterFS server and SSH), and on the first of them what
//! an operator runs: `make gluster` for a replica-3 volume across the three, then `make` with
//! two workers joined over SSH, from nothing. Then: a cell in a container on a worker, kernels
//! spread over both workers, an MD5 and a `run` job on the volume; a worker killed, frozen and
//! cut off from the network, each with its kernels reported dead and its running jobs finished
//! exactly once elsewhere, timed, and the node taking work again once it is back; the gateway
//! on a killed node replaced by the other for its clients; `make scale`, `make status` and
//! `make down`. The cluster is removed however the test ends.
//!
//! It needs Docker and minutes, so it runs only with `CELLGATE_CLUSTER_TESTS=1` (`make test`
//! sets it when it runs as root, `make test-cluster` always); otherwise it fails, unless
//! CELLGATE_SKIP_CLUSTER=1 says to skip it outside CI.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use http::StatusCode;
use md5::Digest;
use rand::RngCore;
use serde_json::{json, Value};
use support::jobs::{final_status, upload};
use support::{Client, KernelSocket};

/// What a user would call broken: the targets are 15 s to see a node gone and 30 s to retry its
/// jobs; these bounds are three times that, and the note reports what was measured.
const DETECTION_BOUND: Duration = Duration::from_secs(45);
const RETRY_BOUND: Duration = Duration::from_secs(90);
/// A node back on the network, or restarted, takes work again within this.
const REJOIN_BOUND: Duration = Duration::from_secs(240);

fn enabled() -> bool {
    if std::env::var("CELLGATE_CLUSTER_TESTS").as_deref() == Ok("1") {
        return true;
    }
    support::prerequisite::skip_or_fail(
        "the multi-node cluster test",
        "it needs CELLGATE_CLUSTER_TESTS=1 (it starts three Docker hosts as containers)",
        "CELLGATE_SKIP_CLUSTER",
    );
    false
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The test cluster, removed when dropped (the test failing included).
struct TestCluster {
    name: String,
    /// Node name (`node1`, ...) -> its address on the cluster's network.
    addresses: BTreeMap<String, String>,
}

impl TestCluster {
    fn up(nodes: usize) -> TestCluster {
        let name = format!("cellgate-test-{}", std::process::id());
        let mut cluster = TestCluster {
            name,
            addresses: BTreeMap::new(),
        };
        let output = cluster.script("cluster/up.sh", &[("CLUSTER_NODES", &nodes.to_string())]);
        assert!(output.status.success(), "cluster/up.sh:\n{}", text(&output));
        let listing = std::fs::read_to_string(format!(
            "{}/target/cluster/{}.nodes",
            env!("CARGO_MANIFEST_DIR"),
            cluster.name
        ))
        .expect("cluster/up.sh lists the nodes");
        cluster.addresses = listing
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(node, address)| (node.to_owned(), address.to_owned()))
            .collect();
        cluster
    }

    fn script(&self, script: &str, env: &[(&str, &str)]) -> Output {
        Command::new(script)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CLUSTER", &self.name)
            .envs(env.iter().copied())
            .output()
            .expect("the cluster script runs")
    }

    fn container(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }

    fn address(&self, node: &str) -> &str {
        &self.addresses[node]
    }

    /// Runs a shell command on a node as root; its output, whatever its exit status.
    fn try_on(&self, node: &str, command: &str) -> Output {
        Command::new("docker")
            .args(["exec", &self.container(node), "bash", "-c", command])
            .output()
            .expect("docker exec runs")
    }

    /// Runs a shell command on a node and returns its output, failing the test on an error.
    fn on(&self, node: &str, command: &str) -> String {
        let started = Instant::now();
        let output = self.try_on(node, command);
        let text = text(&output);
        eprintln!("{node}$ {command}: {:.1?}\n{text}", started.elapsed());
        assert!(output.status.success(), "{node}$ {command} failed:\n{text}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `make ARGS` in the checkout on node1, as the operator runs it there.
    fn make(&self, args: &str) -> String {
        self.on("node1", &format!("cd /root/cellgate && make {args} 2>&1"))
    }

    /// The host engine acting on a node container: kill, pause, network disconnect ...
    fn host_docker(&self, args: &[&str]) {
        let output = Command::new("docker")
            .args(args)
            .output()
            .expect("docker runs");
        assert!(
            output.status.success(),
            "docker {args:?}:\n{}",
            text(&output)
        );
    }

    /// The node whose engine runs the container of this kernel, if any does.
    fn node_of_kernel(&self, kernel: &str) -> Option<String> {
        self.addresses.keys().find_map(|node| {
            let output = self.try_on(
                node,
                &format!("docker ps -q --filter label=org.cellgate.kernel-id={kernel}"),
            );
            (!String::from_utf8_lossy(&output.stdout).trim().is_empty()).then(|| node.clone())
        })
    }

    /// Exactly two runner tasks run, and every other task of the service has ended.
    fn runners_settled(&self) -> bool {
        let output = self.try_on(
            "node1",
            "docker service ps cellgate_kernel-runner --format '{{.DesiredState}} {{.CurrentState}}'",
        );
        if !output.status.success() {
            return false;
        }
        let tasks = String::from_utf8_lossy(&output.stdout).into_owned();
        let running = tasks
            .lines()
            .filter(|line| line.starts_with("Running Running"))
            .count();
        let ending = tasks.lines().any(|line| {
            !line.starts_with("Running ")
                && [
                    "Running",
                    "Starting",
                    "Preparing",
                    "Assigned",
                    "Accepted",
                    "Pending",
                ]
                .iter()
                .any(|state| line.split_whitespace().nth(1) == Some(state))
        });
        running == 2 && !ending
    }

    /// The nodes running a task of a service of the stack.
    fn nodes_of(&self, service: &str) -> BTreeSet<String> {
        self.on(
            "node1",
            &format!(
                "docker service ps cellgate_{service} --filter desired-state=running \
                 --format '{{{{.Node}}}} {{{{.CurrentState}}}}'"
            ),
        )
        .lines()
        .filter(|line| line.contains("Running"))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let output = self.script("cluster/down.sh", &[]);
        eprintln!("cluster/down.sh: {}", text(&output));
    }
}

/// How a worker is taken out, and how it comes back.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Killed,
    Frozen,
    CutOff,
}

/// A runner's id names its node: `node2-runner-1`.
fn runner_node(runner: &str) -> &str {
    runner.split("-runner-").next().unwrap_or(runner)
}

/// Polls `check` every 250 ms until it gives a value or `bound` passes (then fails).
async fn within<T, F, Fut>(what: &str, bound: Duration, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return (value, started.elapsed());
        }
        assert!(
            started.elapsed() < bound,
            "{what}: not within {bound:?} (a user would call that broken)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn job_status(client: &Client, job: &str) -> Value {
    client.get(&format!("/api/jobs/{job}")).await.json()
}

/// A `command` job in the bash image that sleeps, then prints its name once.
async fn sleeper(client: &Client, name: &str, seconds: u32) -> String {
    client
        .post(
            "/api/jobs",
            json!({"kind": "command", "image": "bash", "name": name,
                   "command": format!("sleep {seconds}; echo {name}"),
                   "limits": {"retries": 0}}),
        )
        .await
        .created_id()
}

/// The healthy runners a gateway counts, from its `/healthz`.
async fn healthy_runners(client: &Client) -> Option<u64> {
    let reply = tokio::time::timeout(Duration::from_secs(5), client.get("/healthz"))
        .await
        .ok()?;
    (reply.status == StatusCode::OK).then(|| reply.json()["healthy_runners"].as_u64())?
}

#[tokio::test]
async fn a_three_node_cluster_deploys_and_survives_losing_a_worker() {
    if !enabled() {
        return;
    }
    let started = Instant::now();
    let cluster = TestCluster::up(3);
    let up = started.elapsed();

    cluster.make("gluster NODES='node1 node2 node3'");
    let options = cluster.on("node1", "gluster volume get cellgate network.ping-timeout");
    assert!(
        options.contains(" 5"),
        "the volume fails over in seconds:\n{options}"
    );
    let deploy_started = Instant::now();
    cluster.make("WORKERS=2 JOIN='node2 node3' SKIP_BUILD=1 DEPLOY_TIMEOUT=900");
    let deployed = deploy_started.elapsed();

    // The registry: TLS with the stack's CA, trusted by every node, the images pulled by the
    // workers from it.
    for node in ["node2", "node3"] {
        let images = cluster.on(node, "docker images --format '{{.Repository}}'");
        assert!(
            images.contains(":5000/cellgate/runner") && images.contains(":5000/cellgate/bash"),
            "{node} pulled the images from the swarm's registry:\n{images}"
        );
        cluster.on(node, "ls /etc/docker/certs.d/*:5000/ca.crt");
    }
    assert_eq!(
        cluster.nodes_of("kernel-runner"),
        BTreeSet::from(["node2".to_owned(), "node3".to_owned()]),
        "one runner on each worker, none on the manager"
    );
    let gateways = cluster.nodes_of("gateway");
    assert_eq!(gateways.len(), 2, "two gateways on two nodes: {gateways:?}");

    let token = cluster.on("node1", "cat /root/cellgate/target/swarm/token");
    let token = token.trim();
    let gateway_address = |node: &str| format!("{}:443", cluster.address(node));
    let mut gateway_nodes = gateways.iter();
    let first_gateway = gateway_nodes.next().unwrap().clone();
    let second_gateway = gateway_nodes.next().unwrap().clone();
    let client = Client::new(&gateway_address(&first_gateway), Some(token));
    let other_client = Client::new(&gateway_address(&second_gateway), Some(token));

    // A cell in a container on a worker, through the TLS gateway.
    let first = client.start_kernel("bash").await;
    let mut socket = KernelSocket::connect(&gateway_address(&first_gateway), token, &first).await;
    let execution = socket.execute("echo $(( 6 * 7 ))").await;
    assert_eq!(execution.stdout().trim(), "42");
    socket.close().await;
    let node = cluster
        .node_of_kernel(&first)
        .expect("the kernel's container");
    assert!(node == "node2" || node == "node3", "a kernel ran on {node}");

    // Kernels spread over the workers (least connections, ties on kernels).
    let mut kernels = vec![first.clone()];
    for _ in 0..3 {
        kernels.push(other_client.start_kernel("bash").await);
    }
    let spread: BTreeSet<String> = kernels
        .iter()
        .filter_map(|kernel| cluster.node_of_kernel(kernel))
        .collect();
    assert_eq!(spread.len(), 2, "four kernels on both workers: {spread:?}");

    // An uploaded MD5 job and a `run` job, on the volume every node mounts.
    let mut content = vec![0u8; 1 << 20];
    rand::thread_rng().fill_bytes(&mut content);
    let expected: String = md5::Md5::digest(&content)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let reply = upload(
        &client,
        &json!({"kind": "md5", "name": "an upload"}),
        &[("data.bin", &content)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let md5_job = reply.json()["id"].as_str().unwrap().to_owned();
    let status = final_status(&client, &md5_job).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["result"], expected.as_str(), "{status}");
    let reply = upload(
        &other_client,
        &json!({"kind": "run", "language": "bash", "name": "a script"}),
        &[("main.sh", b"echo \"ran on $(hostname) with $(( 2 + 3 ))\"")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let run_job = reply.json()["id"].as_str().unwrap().to_owned();
    let status = final_status(&client, &run_job).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    let ran_on = status["ran_on"].as_str().unwrap_or_default();
    assert!(
        ["node2", "node3"].contains(&runner_node(ran_on)),
        "{status}"
    );
    let stdout = client
        .get(&format!("/api/jobs/{run_job}/files/stdout"))
        .await;
    assert!(String::from_utf8_lossy(&stdout.body).contains("with 5"));
    let mut finished_jobs = vec![md5_job, run_job];

    // Each failure, on a worker: first a worker with a gateway killed, so that its clients
    // move to the other gateway too.
    let gateway_worker = [first_gateway.as_str(), second_gateway.as_str()]
        .into_iter()
        .find(|node| *node != "node1")
        .expect("a gateway on a worker")
        .to_owned();
    let spare = if gateway_worker == "node2" {
        "node3"
    } else {
        "node2"
    }
    .to_owned();
    let mut report = Vec::new();
    for (failure, victim) in [
        (Failure::Killed, gateway_worker.clone()),
        (Failure::Frozen, spare.clone()),
        (Failure::CutOff, gateway_worker.clone()),
    ] {
        // The gateway on a node that is not failing, and one on the victim if there is one.
        let gateways = cluster.nodes_of("gateway");
        let steady = gateways
            .iter()
            .find(|node| **node != victim)
            .expect("a gateway off the victim")
            .clone();
        let steady_client = Client::new(&gateway_address(&steady), Some(token));
        let survivor = if victim == "node2" { "node3" } else { "node2" };
        // Every gateway task this far, with why it ended: a gateway replaced while a worker
        // failed shows here.
        cluster.on(
            "node1",
            "docker service ps cellgate_gateway --no-trunc \
             --format '{{.Node}} {{.DesiredState}} {{.CurrentState}} {{.Error}}'",
        );
        // A gateway that started since the last failure places kernels once it has found
        // both runners.
        within(
            "the steady gateway seeing both runners",
            REJOIN_BOUND,
            || async { healthy_runners(&steady_client).await.filter(|n| *n == 2) },
        )
        .await;

        // A kernel on the victim, one on the survivor, each with a client connected.
        let mut on_victim = None;
        let mut on_survivor = None;
        for _ in 0..10 {
            let kernel = steady_client.start_kernel("bash").await;
            match cluster.node_of_kernel(&kernel).as_deref() {
                Some(node) if node == victim => on_victim = on_victim.or(Some(kernel)),
                Some(node) if node == survivor => on_survivor = on_survivor.or(Some(kernel)),
                _ => {}
            }
            if on_victim.is_some() && on_survivor.is_some() {
                break;
            }
        }
        let (on_victim, on_survivor) = (
            on_victim.expect("a kernel on the victim"),
            on_survivor.expect("a kernel on the survivor"),
        );
        // The survivor's kernel, used through the gateway on the victim when there is one: its
        // client must come back through the other gateway and find it.
        let entry = if gateways.contains(&victim) {
            victim.clone()
        } else {
            steady.clone()
        };
        // A gateway started since the last failure may not have heard of the kernel yet.
        let entry_client = Client::new(&gateway_address(&entry), Some(token));
        let (_, known) = within("the entry gateway knowing the kernel", RETRY_BOUND, || {
            let (client, kernel) = (&entry_client, &on_survivor);
            async move {
                let reply = client.get(&format!("/api/kernels/{kernel}")).await;
                (reply.status == StatusCode::OK).then_some(())
            }
        })
        .await;
        eprintln!(
            "{failure:?}: the gateway on {entry} knew the survivor's kernel after {known:.1?}"
        );
        let mut survivor_socket =
            KernelSocket::connect(&gateway_address(&entry), token, &on_survivor).await;
        let execution = survivor_socket.execute("count=1; echo $count").await;
        assert_eq!(execution.stdout().trim(), "1");

        // Jobs running on both workers, as many as their slots (two each), short enough that
        // the survivor has free slots when the victim's jobs come back to the queue: the time
        // to their retry is then the time to notice the node is gone.
        let mut sleepers = Vec::new();
        for index in 0..4 {
            sleepers.push(sleeper(&steady_client, &format!("{failure:?}-{index}"), 10).await);
        }
        let victims_jobs: Vec<String> = within("a job running on the victim", RETRY_BOUND, || {
            let (client, sleepers, victim) = (&steady_client, &sleepers, &victim);
            async move {
                // Every job running: the victim holds some of them when it fails.
                let mut running = Vec::new();
                for job in sleepers {
                    let status = job_status(client, job).await;
                    if status["state"] != "running" {
                        return None;
                    }
                    if runner_node(status["node"].as_str().unwrap_or_default()) == victim {
                        running.push(job.clone());
                    }
                }
                (!running.is_empty()).then_some(running)
            }
        })
        .await
        .0;

        // The failure.
        let container = cluster.container(&victim);
        let network = cluster.name.clone();
        let failed_at = Instant::now();
        match failure {
            Failure::Killed => cluster.host_docker(&["kill", &container]),
            Failure::Frozen => cluster.host_docker(&["pause", &container]),
            Failure::CutOff => {
                cluster.host_docker(&["network", "disconnect", &network, &container])
            }
        }

        // Its kernel reported dead, with a reason, by the gateway that stayed.
        let (reason, detected) =
            within("the victim's kernel reported dead", DETECTION_BOUND, || {
                let (client, kernel) = (&steady_client, &on_victim);
                async move {
                    let model = tokio::time::timeout(
                        Duration::from_secs(5),
                        client.get(&format!("/api/kernels/{kernel}")),
                    )
                    .await
                    .ok()?
                    .json();
                    (model["execution_state"] == "dead").then(|| model["reason"].to_string())
                }
            })
            .await;
        // "... is gone: did not answer", or "... left the runner list" once Swarm drops its
        // task from tasks.kernel-runner: either way the runner is named.
        assert!(reason.contains("kernel runner"), "a reason: {reason}");

        // Its running jobs retried on the survivor.
        let _ = within("the victim's jobs retried elsewhere", RETRY_BOUND, || {
            let (client, jobs, victim) = (&steady_client, &victims_jobs, &victim);
            async move {
                for job in jobs {
                    let status = job_status(client, job).await;
                    let elsewhere = status["attempt"].as_u64() >= Some(2)
                        && status["state"] != "queued"
                        && runner_node(
                            status["node"]
                                .as_str()
                                .or(status["ran_on"].as_str())
                                .unwrap_or(victim),
                        ) != victim;
                    if !elsewhere {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;
        let retried = failed_at.elapsed();

        // The survivor's kernel keeps its state, through the other gateway if its own died.
        if entry == victim {
            let reconnected = Instant::now();
            survivor_socket =
                KernelSocket::connect(&gateway_address(&steady), token, &on_survivor).await;
            eprintln!(
                "{failure:?}: a client of the lost gateway reconnected through {steady} in {:.1?}",
                reconnected.elapsed()
            );
        }
        let execution = survivor_socket.execute("echo $(( count + 1 ))").await;
        assert_eq!(
            execution.stdout().trim(),
            "2",
            "the survivor's kernel kept its state"
        );
        survivor_socket.close().await;

        // Every job finished exactly once: succeeded, its name printed once.
        for (index, job) in sleepers.iter().enumerate() {
            let status = final_status(&steady_client, job).await;
            assert_eq!(status["state"], "succeeded", "{status}");
            let stdout = steady_client
                .get(&format!("/api/jobs/{job}/files/stdout"))
                .await;
            assert_eq!(
                String::from_utf8_lossy(&stdout.body),
                format!("{failure:?}-{index}\n"),
                "exactly one attempt's output"
            );
            if victims_jobs.contains(job) {
                assert_eq!(status["attempt"], 2, "{status}");
            }
        }

        // The node back, taking work again.
        let back_at = Instant::now();
        match failure {
            Failure::Killed => cluster.host_docker(&["start", &container]),
            Failure::Frozen => cluster.host_docker(&["unpause", &container]),
            Failure::CutOff => cluster.host_docker(&[
                "network",
                "connect",
                "--alias",
                &victim,
                "--ip",
                cluster.address(&victim),
                &network,
                &container,
            ]),
        }
        // Swarm may replace the runner task of a node that comes back (a cut-off node's task
        // is rescheduled, and its old container stopped some seconds after it reconnects):
        // the runner service has settled once exactly two tasks run and no other is stopping.
        within("the runner service settled", REJOIN_BOUND, || async {
            cluster.runners_settled().then_some(())
        })
        .await;
        within("both runners healthy again", REJOIN_BOUND, || async {
            healthy_runners(&steady_client).await.filter(|n| *n == 2)
        })
        .await;
        let (_, rejoined) = within(
            "a new kernel on the node that came back",
            REJOIN_BOUND,
            || {
                let (client, cluster, victim) = (&steady_client, &cluster, &victim);
                async move {
                    let kernel = client.start_kernel("bash").await;
                    let node = cluster.node_of_kernel(&kernel);
                    client.delete(&format!("/api/kernels/{kernel}")).await;
                    (node.as_deref() == Some(victim.as_str())).then_some(())
                }
            },
        )
        .await;
        let rejoined = rejoined.max(back_at.elapsed());

        // Nothing lost on the volume: every earlier job is still there, final, with its output.
        finished_jobs.extend(sleepers);
        for job in &finished_jobs {
            let status = job_status(&steady_client, job).await;
            assert_eq!(status["state"], "succeeded", "{status}");
        }
        let line = format!(
            "{failure:?} {victim}: kernel dead after {detected:.1?} ({reason}), its jobs running again \
             elsewhere after {retried:.1?} (everything {:.1?}), back and taking kernels {rejoined:.1?} \
             after it returned",
            failed_at.elapsed()
        );
        eprintln!("{line}");
        report.push(line);
    }

    // A rolling update of the runners drains one node at a time: a session on the other node
    // goes on working while the first is replaced.
    let steady = Client::new(&gateway_address("node1"), Some(token));
    let gateway_on_node1 = cluster.nodes_of("gateway").contains("node1");
    let steady = if gateway_on_node1 {
        steady
    } else {
        other_client
    };
    let entry = steady.address.clone();
    let mut sessions = BTreeMap::new();
    for _ in 0..6 {
        let kernel = steady.start_kernel("bash").await;
        if let Some(node) = cluster.node_of_kernel(&kernel) {
            if let std::collections::btree_map::Entry::Vacant(slot) = sessions.entry(node) {
                let mut socket = KernelSocket::connect(&entry, token, &kernel).await;
                socket.execute("n=0").await;
                slot.insert(socket);
            }
        }
        if sessions.len() == 2 {
            break;
        }
    }
    assert_eq!(sessions.len(), 2, "a session on each worker");
    cluster.on(
        "node1",
        "docker service update --detach --force cellgate_kernel-runner >/dev/null",
    );
    let (draining, _) = within(
        "the update draining a first runner",
        RETRY_BOUND,
        || async {
            // A task told to shut down that still runs is draining.
            cluster
                .on(
                    "node1",
                    "docker service ps cellgate_kernel-runner \
                 --format '{{.Node}} {{.DesiredState}} {{.CurrentState}}'",
                )
                .lines()
                .find(|line| line.contains(" Shutdown Running"))
                .and_then(|line| line.split_whitespace().next())
                .map(str::to_owned)
        },
    )
    .await;
    sessions.remove(&draining).unwrap().close().await;
    let (other, mut socket) = sessions.pop_first().unwrap();
    for _ in 0..5 {
        let execution = socket.execute("n=$(( n + 1 )); echo $n").await;
        assert!(
            execution.error().is_none() && !execution.stdout().is_empty(),
            "a session on {other} while {draining} drains"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    socket.close().await;
    within("the rolling update done", REJOIN_BOUND, || async {
        let state = cluster.on(
            "node1",
            "docker service inspect cellgate_kernel-runner --format '{{.UpdateStatus.State}}'",
        );
        (state.trim() == "completed").then_some(())
    })
    .await;
    within(
        "both runners healthy after the update",
        REJOIN_BOUND,
        || async { healthy_runners(&steady).await.filter(|n| *n == 2) },
    )
    .await;

    // make scale, make status, make down.
    cluster.make("scale RUNNERS=1");
    assert_eq!(cluster.nodes_of("kernel-runner").len(), 1);
    cluster.make("scale RUNNERS=2");
    assert_eq!(cluster.nodes_of("kernel-runner").len(), 2);
    let status = cluster.make("status");
    assert!(
        status.contains("node2") && status.contains("node3"),
        "{status}"
    );
    assert!(status.contains("\"status\":\"ok\""), "{status}");
    cluster.make("down");
    let left = cluster.on("node1", "docker service ls -q");
    assert!(left.trim().is_empty(), "make down left services: {left}");

    eprintln!(
        "cluster test: up {up:.1?}, deploy {deployed:.1?}, everything {:.1?}",
        started.elapsed()
    );
    for line in report {
        eprintln!("  {line}");
    }
}
