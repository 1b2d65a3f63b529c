//! The tracepoint events under target `cmwq`, with the kernel's fields, and the execution span
//! that attributes an item's own events to it. A recording subscriber is installed for the
//! whole test binary.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;

use cmwq::{Work, Workqueue, WqFlags};
use common::unique;
use tracing::field::{Field, Visit};

/// One recorded event: its message and fields, and the fields of the span it was inside.
#[derive(Clone, Debug, Default)]
struct Rec {
    fields: HashMap<String, String>,
    span: HashMap<String, String>,
}

static EVENTS: Mutex<Vec<Rec>> = Mutex::new(Vec::new());
static SPANS: Mutex<Vec<HashMap<String, String>>> = Mutex::new(Vec::new());

thread_local! {
    static ENTERED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

struct Recorder;

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut f = HashMap::new();
        attrs.record(&mut Fields(&mut f));
        let mut spans = SPANS.lock().unwrap();
        spans.push(f);
        tracing::span::Id::from_u64(spans.len() as u64)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if event.metadata().target() != "cmwq" && event.metadata().target() != "observe_trace" {
            return;
        }
        let mut rec = Rec::default();
        event.record(&mut Fields(&mut rec.fields));
        if let Some(id) = ENTERED.with(|e| e.borrow().last().copied()) {
            rec.span = SPANS.lock().unwrap()[id as usize - 1].clone();
        }
        EVENTS.lock().unwrap().push(rec);
    }
    fn enter(&self, id: &tracing::span::Id) {
        ENTERED.with(|e| e.borrow_mut().push(id.into_u64()));
    }
    fn exit(&self, _: &tracing::span::Id) {
        ENTERED.with(|e| e.borrow_mut().pop());
    }
}

fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tracing::subscriber::set_global_default(Recorder).expect("subscriber"));
}

fn events_for(work: usize) -> Vec<Rec> {
    let w = work.to_string();
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.fields.get("work") == Some(&w))
        .cloned()
        .collect()
}

fn message(r: &Rec) -> &str {
    r.fields.get("message").map_or("", String::as_str)
}

#[test]
fn an_item_gets_queue_activate_start_and_end_events_with_the_kernels_fields() {
    install();
    let name = unique("traced");
    let wq = Workqueue::new(&name, WqFlags::empty(), 0).unwrap();
    let cpu = cmwq::online_cpus()[0];
    let item = Work::new(|_| tracing::info!(target: "observe_trace", "hello from the item"));
    assert!(wq.queue_on(cpu, &item).unwrap());
    wq.flush();
    let all = EVENTS.lock().unwrap().clone();
    let queued = all
        .iter()
        .find(|r| message(r) == "workqueue_queue_work" && r.fields.get("workqueue") == Some(&name))
        .expect("a workqueue_queue_work event");
    let work = queued.fields["work"]
        .parse::<usize>()
        .expect("work is an address");
    assert_eq!(queued.fields["req_cpu"], cpu.to_string());
    assert_eq!(queued.fields["cpu"], cpu.to_string());
    assert!(queued.fields["function"].contains("an_item_gets_queue"));
    let names: Vec<String> = events_for(work)
        .iter()
        .map(|r| message(r).to_string())
        .collect();
    assert_eq!(
        names,
        [
            "workqueue_queue_work",
            "workqueue_activate_work",
            "workqueue_execute_start",
            "workqueue_execute_end"
        ],
        "events of the item in order"
    );
    // The item's own event is inside the execution span naming its queue and function.
    let own = all
        .iter()
        .find(|r| message(r) == "hello from the item")
        .expect("the item's event");
    assert_eq!(own.span.get("workqueue"), Some(&name));
    assert!(own.span["function"].contains("an_item_gets_queue"));
}

#[test]
fn an_inactive_item_is_activated_when_a_slot_frees() {
    install();
    let name = unique("traced_inactive");
    let wq = Workqueue::new(&name, WqFlags::UNBOUND, 1).unwrap();
    let blocker = common::Blocker::new();
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    let late = Work::new(|_| {});
    assert!(wq.queue(&late));
    let queued = EVENTS
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|r| message(r) == "workqueue_queue_work" && r.fields.get("workqueue") == Some(&name))
        .cloned()
        .expect("queue event");
    let work: usize = queued.fields["work"].parse().unwrap();
    assert_eq!(queued.fields["req_cpu"], "-1");
    assert_eq!(queued.fields["cpu"], "-1", "unbound");
    let before: Vec<String> = events_for(work)
        .iter()
        .map(|r| message(r).to_string())
        .collect();
    assert_eq!(
        before,
        ["workqueue_queue_work"],
        "inactive: not activated yet"
    );
    blocker.gate.open();
    wq.flush();
    let after: Vec<String> = events_for(work)
        .iter()
        .map(|r| message(r).to_string())
        .collect();
    assert_eq!(
        after,
        [
            "workqueue_queue_work",
            "workqueue_activate_work",
            "workqueue_execute_start",
            "workqueue_execute_end"
        ]
    );
}
