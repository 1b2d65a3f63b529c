//! The attributes of `SYSFS` unbound queues through the control endpoint (issue 15): `get
//! WORKQUEUE` reads what the kernel's `/sys/devices/virtual/workqueue/WORKQUEUE/` files
//! show, `set WORKQUEUE KNOB VALUE` writes `nice`, `cpumask`, `affinity_scope` and
//! `affinity_strict` through `apply_attrs`. Most checks use `control::answer`, the very
//! reply the socket sends, on this process's own uniquely named queues; one goes through a
//! real socket in a child process (`harden_util::isolated`: the endpoint is process-wide).

mod common;
mod control_util;
mod harden_util;

use cmwq::control::{answer, Client};
use cmwq::{AffinityScope, Work, Workqueue, WqFlags};
use common::unique;
use harden_util::isolated;
use serde_json::{json, Value};

#[track_caller]
fn ok(request: &str) -> Value {
    control_util::ok(&answer(request))
}

#[track_caller]
fn refused(request: &str) -> String {
    control_util::refused(&answer(request))
}

fn sysfs_unbound(name: &str) -> Workqueue {
    Workqueue::new(name, WqFlags::SYSFS | WqFlags::UNBOUND, 0).expect("queue")
}

fn list(cpus: &[usize]) -> String {
    // Only what the tests need: single CPUs and runs of consecutive ones.
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

#[test]
fn get_shows_every_attribute_of_an_unbound_sysfs_queue() {
    let name = unique("ctl-attrs-get");
    let wq = sysfs_unbound(&name);
    let got = ok(&format!("get {name}"));
    let scope = format!("default ({})", {
        let r = AffinityScope::Default.resolve();
        format!("{r:?}").to_lowercase()
    });
    assert_eq!(
        got,
        json!({
            "workqueue": name,
            "per_cpu": 0,
            "max_active": 1024,
            "nice": 0,
            "cpumask": list(&cmwq::online_cpus()),
            "affinity_scope": scope,
            "affinity_strict": 0,
        })
    );
    drop(wq);
}

#[test]
fn a_per_cpu_sysfs_queue_has_max_active_only() {
    let name = unique("ctl-attrs-percpu");
    let _wq = Workqueue::new(&name, WqFlags::SYSFS, 8).expect("queue");
    assert_eq!(
        ok(&format!("get {name}")),
        json!({"workqueue": name, "per_cpu": 1, "max_active": 8})
    );
    for (knob, value) in [
        ("nice", "1"),
        ("cpumask", "0"),
        ("affinity_scope", "cpu"),
        ("affinity_strict", "1"),
    ] {
        let e = refused(&format!("set {name} {knob} {value}"));
        assert!(
            e.contains("per-CPU") && e.contains("max_active only"),
            "{e}"
        );
    }
    ok(&format!("set {name} max_active 3"));
    assert_eq!(ok(&format!("get {name}"))["max_active"], 3);
}

#[test]
fn set_goes_through_apply_attrs() {
    let name = unique("ctl-attrs-set");
    let wq = sysfs_unbound(&name);
    assert_eq!(
        ok(&format!("set {name} nice -5")),
        json!({"workqueue": name, "nice": -5})
    );
    assert_eq!(wq.attrs().nice, -5);
    let first = cmwq::online_cpus()[0];
    assert_eq!(
        ok(&format!("set {name} cpumask {first}")),
        json!({"workqueue": name, "cpumask": first.to_string()})
    );
    assert_eq!(wq.attrs().cpumask, [first]);
    assert_eq!(
        ok(&format!("set {name} affinity_scope numa")),
        json!({"workqueue": name, "affinity_scope": "numa"})
    );
    assert_eq!(wq.attrs().affinity_scope, AffinityScope::Numa);
    assert_eq!(
        ok(&format!("set {name} affinity_strict 1")),
        json!({"workqueue": name, "affinity_strict": 1})
    );
    assert!(wq.attrs().affinity_strict);
    // The queue still runs items, on the new attributes.
    let (item, runs) = common::counting_item();
    assert!(wq.queue(&item));
    let flushed = item.clone();
    common::with_deadline("flush", move || flushed.flush());
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    let got = ok(&format!("get {name}"));
    assert_eq!(got["nice"], -5);
    assert_eq!(got["cpumask"], first.to_string());
    assert_eq!(got["affinity_scope"], "numa");
    assert_eq!(got["affinity_strict"], 1);
}

#[test]
fn bad_values_and_other_queues_are_refused_and_change_nothing() {
    let name = unique("ctl-attrs-bad");
    let wq = sysfs_unbound(&name);
    let before = wq.attrs();
    for (req, says) in [
        (format!("set {name} nice 20"), "-20..=19"),
        (format!("set {name} nice -21"), "-20..=19"),
        (format!("set {name} nice x"), "-20..=19"),
        (format!("set {name} cpumask x"), "CPU list"),
        (format!("set {name} cpumask 3-1"), "CPU list"),
        (
            format!("set {name} cpumask 99999"),
            "not one of this process's CPUs",
        ),
        (
            format!("set {name} affinity_scope llc"),
            "one of default cpu smt",
        ),
        (format!("set {name} affinity_strict yes"), "0 or 1"),
        (format!("set {name} per_cpu 0"), "unknown attribute"),
    ] {
        let e = refused(&req);
        assert!(e.contains(says), "{req}: {e}");
    }
    assert_eq!(wq.attrs(), before);

    let plain = unique("ctl-attrs-plain");
    let _p = Workqueue::new(&plain, WqFlags::UNBOUND, 0).expect("queue");
    for req in [format!("get {plain}"), format!("set {plain} nice 1")] {
        assert!(refused(&req).contains("SYSFS"), "{req}");
    }
    assert!(refused("get ctl-attrs-no-such-queue").contains("no workqueue"));
}

#[test]
fn through_a_socket() {
    isolated("through_a_socket", || {
        let endpoint = cmwq::control::serve().expect("serve");
        let wq = sysfs_unbound("ctl_attrs_socket");
        let mut c = Client::connect(std::process::id()).expect("connect");
        let reply: Value =
            serde_json::from_str(&c.request("set ctl_attrs_socket nice 2").unwrap()).unwrap();
        assert_eq!(reply["ok"], true, "{reply}");
        let reply: Value =
            serde_json::from_str(&c.request("get ctl_attrs_socket").unwrap()).unwrap();
        assert_eq!(reply["result"]["nice"], 2, "{reply}");
        assert_eq!(wq.attrs().nice, 2);
        let item = Work::new(|_| {});
        assert!(wq.queue(&item));
        drop(endpoint);
    });
}
