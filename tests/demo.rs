//! The README's first command: `sharegate demo` starts, prints its tour, and
//! the tour's claims hold against the running process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;

/// Kills the demo when the test ends, however it ends.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_tour_works() {
    let child = Command::new(env!("CARGO_BIN_EXE_sharegate"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sharegate demo");
    let mut demo = Demo(child);
    let stdout = demo.0.stdout.take().expect("stdout");
    // Read the tour on a thread: a blocking read, bounded by the timeout below.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tour = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let done = line.contains("Ctrl-C stops the demo");
            tour.push_str(&line);
            tour.push('\n');
            if done {
                break;
            }
        }
        let _ = tx.send(tour);
    });
    let tour = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the demo printed its tour");
    let gw = tour
        .lines()
        .find_map(|l| l.trim().strip_prefix("gateway   http://"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the tour names the gateway address");
    let gw: std::net::SocketAddr = gw.parse().expect("an address");
    assert!(
        tour.contains("share_page"),
        "the tour shows the policy table"
    );
    let token = sharegate::demo::DEMO_TOKEN;

    let inside = "127.0.0.1".parse().unwrap();
    let outside = "127.0.0.2".parse().unwrap();
    let read = format!("/api/v1/public/{token}/run");
    let r = common::request(inside, gw, "GET", &read, &[], "").await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains(&format!("http://{gw}/public/{token}/r")),
        "the share_url is rewritten to the gateway's origin: {}",
        r.text()
    );
    assert!(!r.text().contains("smith.example.com"));
    let r = common::request(inside, gw, "DELETE", &read, &[], "").await;
    assert_eq!(r.status, 405);
    let r = common::request(outside, gw, "GET", &read, &[], "").await;
    assert_eq!(r.status, 403);
    let r = common::request(
        outside,
        gw,
        "GET",
        &format!("/public/{token}/r"),
        &[("accept", "text/html")],
        "",
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("opens only on the company network"));
    let r = common::request(
        inside,
        gw,
        "GET",
        &read,
        &[("host", "attacker.example")],
        "",
    )
    .await;
    assert_eq!(r.status, 421);
    assert!(tour.contains("curl -si -H 'Host: attacker.example'"));
}
