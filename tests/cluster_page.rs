//! The cluster page and its data, end to end: two runner processes on one job volume behind a
//! gateway. `/cluster` is a page behind the token like the others and lists the runners;
//! `/api/cluster` shows the nodes from their heartbeats, the runners, cells per second and
//! jobs per minute once a cell and a job have run, and the events of a runner killed in the
//! middle of a job: the runner gone, its node stale, its job run again elsewhere. Runners
//! serve `/metrics` in the Prometheus text format to whoever has the runner secret, in its
//! header or as a bearer token, and to nobody else. In a browser, the page draws the nodes
//! and the charts from the live stream.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use support::browser::{self, Browser};
use support::cluster::SECRET;
use support::jobs::{final_status, submit_command, JobCluster};
use support::{eventually, Client, KernelSocket, Server};

fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cellgate-{label}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn snapshot_of(client: &Client) -> Value {
    let reply = client.get("/api/cluster").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    reply.json()
}

fn node<'a>(snapshot: &'a Value, name: &str) -> Option<&'a Value> {
    snapshot["nodes"]
        .as_array()?
        .iter()
        .find(|node| node["name"] == name)
}

fn has_event(snapshot: &Value, kind: &str, subject: &str) -> bool {
    snapshot["events"].as_array().is_some_and(|events| {
        events
            .iter()
            .any(|event| event["kind"] == kind && event["subject"] == subject)
    })
}

fn largest(values: &Value) -> f64 {
    values
        .as_array()
        .map(|values| values.iter().filter_map(Value::as_f64).fold(0.0, f64::max))
        .unwrap_or(0.0)
}

/// A plain-HTTP `GET` on a runner with `headers`: its status and body text.
async fn runner_text(base: &str, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let address = base.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("the runner accepts connections");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP handshake with the runner");
    tokio::spawn(connection);
    let mut request = http::Request::get(path).header("host", address);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("the runner answers");
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_page_shows_nodes_runners_throughput_and_events() {
    let volume = scratch("cluster-volume");
    let mut cluster = JobCluster::start(&[volume.clone(), volume.clone()], 1, 1).await;
    let client = cluster.client();
    let urls: Vec<String> = cluster.runners.iter().map(|r| r.url.clone()).collect();

    // The page, behind the token like every page, lists the runners as it arrives.
    let page = client.get("/cluster").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let html = String::from_utf8_lossy(&page.body);
    for url in &urls {
        assert!(
            html.contains(url.as_str()),
            "{url} is not on the page:\n{html}"
        );
    }
    assert!(html.contains("/static/cluster.js"));
    let anonymous = client.without_token();
    let to_login = anonymous.get("/cluster").await;
    assert!(to_login.status.is_redirection(), "{to_login:?}");
    assert!(to_login.header("location").unwrap().starts_with("/login"));
    assert_eq!(
        anonymous.get("/api/cluster").await.status,
        StatusCode::FORBIDDEN
    );
    // Prometheus sends the gateway token as a bearer token.
    let bearer = format!("Bearer {}", cluster.gateway.token);
    let scraped = anonymous
        .send(
            http::Method::GET,
            "/metrics",
            None,
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(scraped.status, StatusCode::OK);

    // Both nodes from their heartbeats, alive, with their load, and the runner on each.
    let snapshot = eventually("both nodes alive in /api/cluster", || async {
        let snapshot = snapshot_of(&client).await;
        let alive = ["node0", "node1"].iter().all(|name| {
            node(&snapshot, name).is_some_and(|node| {
                node["state"] == "alive" && node["runners"].as_array().is_some_and(|r| r.len() == 1)
            })
        });
        alive.then_some(snapshot)
    })
    .await;
    for name in ["node0", "node1"] {
        let node = node(&snapshot, name).unwrap();
        assert!(node["memory_total_bytes"].as_u64().unwrap() > 0, "{node}");
        assert!(node["cpu_percent"].as_f64().is_some(), "{node}");
        assert_eq!(node["slots"], 1);
        assert!(!node["history"]["cpu_percent"]
            .as_array()
            .unwrap()
            .is_empty());
        assert_eq!(
            node["role"],
            Value::Null,
            "the process backend has no engine to ask"
        );
    }
    let runners = snapshot["runners"].as_array().unwrap();
    assert_eq!(runners.len(), 2, "{snapshot}");
    for runner in runners {
        assert_eq!(runner["state"], "healthy", "{runner}");
        assert!(urls
            .iter()
            .any(|url| runner["url"].as_str().unwrap().starts_with(url.as_str())));
    }
    assert!(has_event(
        &snapshot,
        "runner_joined",
        &format!("{}/", urls[0])
    ));

    // A cell and a job: the throughput shows them.
    let kernel = client.start_kernel("python3").await;
    let mut socket =
        KernelSocket::connect(&cluster.gateway.address, &cluster.gateway.token, &kernel).await;
    assert_eq!(
        socket.execute("6 * 7").await.result().as_deref(),
        Some("42")
    );
    let job = submit_command(&client, "echo done", 0).await;
    assert_eq!(final_status(&client, &job).await["state"], "succeeded");
    let snapshot = eventually("the cell and the job in the throughput", || async {
        let snapshot = snapshot_of(&client).await;
        let throughput = &snapshot["throughput"];
        let seen = throughput["cells_total"].as_u64() >= Some(1)
            && largest(&throughput["cells_per_second"]) > 0.0
            && largest(&throughput["jobs_per_minute"]) >= 1.0
            && snapshot["jobs"]["finished"].as_u64() >= Some(1);
        seen.then_some(snapshot)
    })
    .await;
    let started: u64 = snapshot["runners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|runner| runner["kernels_started"].as_u64())
        .sum();
    assert_eq!(started, 1, "{snapshot}");
    let times = snapshot["throughput"]["times"].as_array().unwrap().len();
    assert_eq!(
        snapshot["throughput"]["cells_per_second"]
            .as_array()
            .unwrap()
            .len(),
        times
    );
    socket.close().await;

    // Runners serve Prometheus metrics to the secret, in its header or as a bearer token.
    let secret_bearer = format!("Bearer {SECRET}");
    for headers in [
        vec![("x-cellgate-runner-secret", SECRET)],
        vec![("authorization", secret_bearer.as_str())],
    ] {
        let (status, text) = runner_text(&urls[0], "/metrics", &headers).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        for metric in [
            "# TYPE cellgate_kernels gauge",
            "cellgate_kernels{state=\"idle\"}",
            "cellgate_sessions ",
            "cellgate_kernels_started_total ",
            "cellgate_jobs_finished_total{state=\"succeeded\"}",
            "cellgate_jobs_running ",
            "cellgate_jobs_unfinished ",
            "cellgate_node_memory_total_bytes ",
            "cellgate_runner_info{runner_id=\"node0\"",
        ] {
            assert!(text.contains(metric), "{metric} missing from:\n{text}");
        }
    }
    let mut finished = 0;
    for url in &urls {
        let (_, text) = runner_text(url, "/metrics", &[("x-cellgate-runner-secret", SECRET)]).await;
        finished += text
            .lines()
            .find_map(|line| {
                line.strip_prefix("cellgate_jobs_finished_total{state=\"succeeded\"} ")
            })
            .and_then(|value| value.parse::<u64>().ok())
            .expect("a count of succeeded jobs");
    }
    assert_eq!(
        finished, 1,
        "the job is counted once, by the runner that ran it"
    );
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong-secret-of-some-length")],
        vec![("x-cellgate-runner-secret", "wrong-secret-of-some-length")],
    ] {
        let (status, _) = runner_text(&urls[0], "/metrics", &headers).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
    }

    // A runner killed in the middle of a job: it is gone, its node is stale, and its job runs
    // again on the other node, all in the events.
    let long = submit_command(&client, "sleep 20", 0).await;
    let (victim, snapshot) = eventually("the long job seen running", || async {
        let snapshot = snapshot_of(&client).await;
        let on = snapshot["nodes"].as_array()?.iter().find(|node| {
            node["running_jobs"]
                .as_array()
                .is_some_and(|jobs| jobs.iter().any(|job| job["id"] == long.as_str()))
        })?;
        let name = on["name"].as_str()?.to_owned();
        Some((name, snapshot.clone()))
    })
    .await;
    let index: usize = victim.trim_start_matches("node").parse().unwrap();
    let survivor = format!("node{}", 1 - index);
    assert_eq!(
        node(&snapshot, &victim).unwrap()["running_jobs"][0]["attempt"],
        1
    );
    cluster.runners[index].kill().await;
    let snapshot = eventually("the kill in the events", || async {
        let snapshot = snapshot_of(&client).await;
        let seen = has_event(&snapshot, "runner_gone", &victim)
            && has_event(&snapshot, "node_stale", &victim)
            && has_event(&snapshot, "job_requeued", &long);
        seen.then_some(snapshot)
    })
    .await;
    assert_eq!(node(&snapshot, &victim).unwrap()["state"], "stale");
    let requeued = snapshot["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["kind"] == "job_requeued")
        .unwrap();
    assert_eq!(
        requeued["message"],
        format!("runs again as attempt 2 on {survivor}; attempt 1 ran on {victim}").as_str()
    );
    let gone = snapshot["runners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|runner| runner["runner_id"] == victim.as_str())
        .unwrap();
    assert_eq!(gone["state"], "gone", "{gone}");
    // Newest first, with increasing ids.
    let ids: Vec<u64> = snapshot["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|pair| pair[0] > pair[1]), "{ids:?}");

    let _ = client.delete(&format!("/api/jobs/{long}")).await;
    drop(cluster);
    let _ = std::fs::remove_dir_all(volume);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_page_draws_nodes_and_charts_in_a_browser() {
    if !browser::available() {
        return;
    }
    let server = Server::start().await;
    let browser = Browser::start().await;
    let base = format!("https://{}", server.address);
    browser
        .goto(&format!("{base}/cluster?token={}", server.token))
        .await;
    assert_eq!(browser.current_url().await, format!("{base}/cluster"));
    let drawn = browser
        .wait_for_script(
            "a node with its chart and the throughput charts, live",
            Duration::from_secs(60),
            "return {\n\
               nodes: document.querySelectorAll('#nodes tbody tr[data-node]').length,\n\
               nodeLines: document.querySelectorAll('#nodes svg.node-chart path.line.cpu').length,\n\
               cellsGrid: document.querySelectorAll('#cells-chart line.grid').length,\n\
               jobsGrid: document.querySelectorAll('#jobs-chart line.grid').length,\n\
               runners: document.querySelectorAll('#runners tbody tr[data-runner]').length,\n\
               live: document.getElementById('stream-state').textContent,\n\
               current: document.querySelector('nav a[aria-current=page]').textContent,\n\
             };",
            serde_json::json!([]),
            |answer| {
                answer["nodes"].as_u64() >= Some(1)
                    && answer["nodeLines"].as_u64() >= Some(1)
                    && answer["cellsGrid"].as_u64() >= Some(1)
                    && answer["live"].as_str().is_some_and(|text| text.contains("live"))
            },
        )
        .await;
    assert_eq!(drawn["jobsGrid"], 3, "{drawn}");
    assert!(drawn["runners"].as_u64() >= Some(1), "{drawn}");
    assert_eq!(drawn["current"], "cluster", "{drawn}");
    // Every page links to the cluster page.
    browser.goto(&format!("{base}/jobs")).await;
    let link = browser.text("nav a.nav-cluster").await;
    assert_eq!(link, "cluster");
}
