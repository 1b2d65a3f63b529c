//! The `cmwq` tools against a real `cmwq demo --serve` process: `list`, `stats` (table and
//! JSON), `dump`, `prometheus`, `ctl`; and the default command still runs the demo.

mod common;

use common::{cmwq, ok, Server, TempDir};
use serde_json::Value;

const WQ_STATS_FIELDS: [&str; 12] = [
    "total",
    "completed",
    "in_flight",
    "cpu_time",
    "cpu_intensive",
    "cm_wakeups",
    "repatriated",
    "mayday",
    "rescued",
    "pending",
    "inactive",
    "max_active",
];

const DEMO_QUEUES: [&str; 7] = [
    "demo_events",
    "demo_unbound",
    "demo_blocking",
    "demo_hog",
    "demo_sysfs",
    "demo_reclaim",
    "demo_ordered",
];

#[test]
fn the_default_command_still_runs_the_demo() {
    let rt = TempDir::new("default");
    let out = ok(&rt, &[]);
    assert!(out.starts_with("cmwq demo:"), "{out}");
    assert!(out.contains("all good"), "{out}");
}

fn json_stats(rt: &TempDir, pid: u32) -> Vec<Value> {
    let out = ok(rt, &["stats", "--pid", &pid.to_string(), "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v.as_array().unwrap().clone()
}

fn named<'a>(records: &'a [Value], name: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {records:?}"))
}

#[test]
fn list_stats_dump_prometheus_and_ctl() {
    let rt = TempDir::new("tools");
    let server = Server::start(&rt);
    let pid = server.pid.to_string();
    assert!(
        server.banner[0].contains(&format!("{pid}.sock")),
        "{:?}",
        server.banner
    );

    // A stale socket of a dead process is not listed.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let stale = rt.path().join("cmwq").join(format!("{dead_pid}.sock"));
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let list = ok(&rt, &["list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert!(
        lines[0].contains("PID") && lines[0].contains("PROGRAM"),
        "{list}"
    );
    // (`list` also looks in /tmp/cmwq-UID, where other processes of this user may serve.)
    let ours: Vec<&str> = lines[1..]
        .iter()
        .copied()
        .filter(|l| l.contains(rt.path().to_str().unwrap()))
        .collect();
    assert_eq!(ours.len(), 1, "one live endpoint: {list}");
    let row: Vec<&str> = ours[0].split_whitespace().collect();
    assert_eq!(row[0], pid, "{list}");
    assert_eq!(row[1], "cmwq", "{list}");
    assert!(!list.contains(&format!("{dead_pid}.sock")), "{list}");

    // The wq_monitor table.
    let table = ok(&rt, &["stats", "--pid", &pid]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["total", "infl", "CPUtime", "CPUitsv", "CMW/RPR", "mayday", "rescued"]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    for q in DEMO_QUEUES {
        let r = rows
            .iter()
            .find(|r| r[0] == q)
            .unwrap_or_else(|| panic!("{q} missing: {table}"));
        assert_eq!(r.len(), 8, "{r:?}");
        let unbound = ["demo_unbound", "demo_sysfs", "demo_reclaim", "demo_ordered"].contains(&q);
        assert_eq!(
            r[4] == "-",
            unbound,
            "CPUitsv only for per-CPU queues: {r:?}"
        );
        assert_eq!(
            r[6] == "-",
            q != "demo_reclaim",
            "mayday only with a rescuer: {r:?}"
        );
        assert!(
            r[1].parse::<u64>().is_ok() && r[3].parse::<f64>().is_ok(),
            "{r:?}"
        );
    }

    // JSON: every WqStats field by name; the counters move.
    let first = json_stats(&rt, server.pid);
    for r in &first {
        for f in WQ_STATS_FIELDS
            .iter()
            .chain(&["name", "id", "flags", "ordered"])
        {
            assert!(r.get(f).is_some(), "{f} missing in {r}");
        }
    }
    let before = named(&first, "demo_events")["total"].as_u64().unwrap();
    let end = std::time::Instant::now() + common::DEADLINE;
    loop {
        let now = json_stats(&rt, server.pid);
        let e = named(&now, "demo_events");
        if e["total"].as_u64().unwrap() > before {
            assert!(e["completed"].as_u64().unwrap() <= e["total"].as_u64().unwrap());
            break;
        }
        assert!(std::time::Instant::now() < end, "demo_events never moved");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // The dump and the Prometheus text.
    let dump = ok(&rt, &["dump", "--pid", &pid]);
    assert!(
        dump.starts_with("Showing busy workqueues and worker pools:"),
        "{dump}"
    );
    let all = ok(&rt, &["dump", "--pid", &pid, "--all"]);
    assert!(
        all.starts_with("Showing all workqueues and worker pools:"),
        "{all}"
    );
    for q in DEMO_QUEUES {
        assert!(
            all.contains(&format!("workqueue {q}: flags=")),
            "{q}: {all}"
        );
    }
    let prom = ok(&rt, &["prometheus", "--pid", &pid]);
    assert!(
        prom.contains("# TYPE cmwq_workqueue_total counter"),
        "{prom}"
    );
    assert!(
        prom.contains("cmwq_workqueue_total{workqueue=\"demo_events\""),
        "{prom}"
    );

    // ctl: the SYSFS queue's max_active, and nothing else.
    assert_eq!(named(&first, "demo_sysfs")["max_active"], 2);
    let set = ok(
        &rt,
        &["ctl", "--pid", &pid, "demo_sysfs", "max_active", "6"],
    );
    assert_eq!(set.trim(), "demo_sysfs: max_active = 6");
    let after = json_stats(&rt, server.pid);
    assert_eq!(named(&after, "demo_sysfs")["max_active"], 6);
    let refused = cmwq(
        &rt,
        &["ctl", "--pid", &pid, "demo_events", "max_active", "6"],
    );
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("SYSFS"), "{err}");
    let zero = cmwq(
        &rt,
        &["ctl", "--pid", &pid, "demo_sysfs", "max_active", "0"],
    );
    assert_eq!(zero.status.code(), Some(1), "{zero:?}");
    // The attributes of the SYSFS unbound queue: shown all at once, set one at a time.
    let nice = ok(&rt, &["ctl", "--pid", &pid, "demo_sysfs", "nice", "-5"]);
    assert_eq!(nice.trim(), "demo_sysfs: nice = -5");
    let strict = ok(
        &rt,
        &["ctl", "--pid", &pid, "demo_sysfs", "affinity_strict", "1"],
    );
    assert_eq!(strict.trim(), "demo_sysfs: affinity_strict = 1");
    let shown = ok(&rt, &["ctl", "--pid", &pid, "demo_sysfs"]);
    for line in [
        "affinity_strict  1",
        "max_active       6",
        "nice             -5",
        "per_cpu          0",
    ] {
        assert!(shown.lines().any(|l| l == line), "{line:?} in\n{shown}");
    }
    assert!(
        shown.contains("cpumask") && shown.contains("affinity_scope"),
        "{shown}"
    );
    for bad in [
        &["demo_sysfs", "nice", "30"][..],
        &["demo_sysfs", "affinity_scope", "llc"],
        &["demo_sysfs", "cpumask", "x"],
        &["demo_events", "nice", "1"],
        &["demo_events"],
    ] {
        let mut args = vec!["ctl", "--pid", &pid];
        args.extend_from_slice(bad);
        let out = cmwq(&rt, &args);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {out:?}");
    }
    let after = json_stats(&rt, server.pid);
    assert_eq!(named(&after, "demo_sysfs")["max_active"], 6);
    assert_eq!(named(&after, "demo_events")["max_active"], 1024);
}

#[test]
fn a_process_without_an_endpoint_is_reported_clearly() {
    let rt = TempDir::new("none");
    let out = cmwq(&rt, &["stats", "--pid", "999999999"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect") && err.contains("cmwq list"),
        "{err}"
    );
    let list = ok(&rt, &["list"]);
    assert!(!list.contains(rt.path().to_str().unwrap()), "{list}");
    assert!(!list.contains("999999999"), "{list}");
}
