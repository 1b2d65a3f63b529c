//! `cmwq top`: a live view of a process's workqueues and pools, refreshed every second.
//!
//! Per workqueue the wq_monitor columns, each counter as a total and, where it moves, as a
//! rate over the last second; per pool its workers, idle, running and queued items. The
//! workqueue table is sorted by one column (`s`/`S` or the arrows pick it, `r` reverses);
//! `q` quits.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};
use ratatui::Frame;

use crate::endpoint::{Hello, PoolRecord, Source, WqRecord};
use crate::table;

const REFRESH: Duration = Duration::from_secs(1);

/// One workqueue as shown: its record and its rates over the last interval.
struct Shown {
    rec: WqRecord,
    /// Items started per second.
    total_rate: f64,
    /// CPU time per second, as a percentage of one CPU.
    cpu_pct: f64,
    /// CMW/RPR per second.
    cmw_rate: f64,
}

/// A column of the workqueue table.
struct Col {
    title: &'static str,
    width: u16,
    /// Sort key: numbers sort descending first, the name ascending.
    key: fn(&Shown) -> f64,
    cell: fn(&Shown) -> String,
}

fn rate(v: f64) -> String {
    if v >= 9.95 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

const NAME_COL: usize = 0;

const COLS: &[Col] = &[
    Col {
        title: "workqueue",
        width: 24,
        key: |_| 0.0,
        cell: |s| table::short_name(&s.rec.name).to_string(),
    },
    Col {
        title: "total",
        width: 10,
        key: |s| s.rec.total as f64,
        cell: |s| s.rec.total.to_string(),
    },
    Col {
        title: "total/s",
        width: 8,
        key: |s| s.total_rate,
        cell: |s| rate(s.total_rate),
    },
    Col {
        title: "infl",
        width: 5,
        key: |s| s.rec.in_flight as f64,
        cell: |s| s.rec.in_flight.to_string(),
    },
    Col {
        title: "CPUtime",
        width: 8,
        key: |s| s.rec.cpu_time.get().as_secs_f64(),
        cell: |s| format!("{:.1}", s.rec.cpu_time.get().as_secs_f64()),
    },
    Col {
        title: "CPU%",
        width: 6,
        key: |s| s.cpu_pct,
        cell: |s| rate(s.cpu_pct),
    },
    Col {
        title: "CPUitsv",
        width: 7,
        key: |s| s.rec.cpu_intensive as f64,
        cell: |s| table::cpu_intensive(&s.rec),
    },
    Col {
        title: "CMW/RPR",
        width: 7,
        key: |s| s.rec.cmw_rpr() as f64,
        cell: |s| s.rec.cmw_rpr().to_string(),
    },
    Col {
        title: "CMW/s",
        width: 6,
        key: |s| s.cmw_rate,
        cell: |s| rate(s.cmw_rate),
    },
    Col {
        title: "mayday",
        width: 6,
        key: |s| s.rec.mayday as f64,
        cell: |s| table::rescue(&s.rec).0,
    },
    Col {
        title: "rescued",
        width: 7,
        key: |s| s.rec.rescued as f64,
        cell: |s| table::rescue(&s.rec).1,
    },
    Col {
        title: "pend",
        width: 5,
        key: |s| s.rec.pending as f64,
        cell: |s| s.rec.pending.to_string(),
    },
    Col {
        title: "inact",
        width: 5,
        key: |s| s.rec.inactive as f64,
        cell: |s| s.rec.inactive.to_string(),
    },
    Col {
        title: "max",
        width: 5,
        key: |s| s.rec.max_active as f64,
        cell: |s| s.rec.max_active.to_string(),
    },
];

struct App {
    source: Source,
    /// What the header names: `pid N (program)`, or the in-process demo.
    title: String,
    shown: Vec<Shown>,
    pools: Vec<PoolRecord>,
    /// The previous sample, by workqueue id, and when it was taken.
    prev: HashMap<u64, WqRecord>,
    prev_at: Option<Instant>,
    sort: usize,
    reverse: bool,
    samples: u64,
    error: Option<String>,
}

impl App {
    fn sample(&mut self) {
        let now = Instant::now();
        let stats = self.source.get::<Vec<WqRecord>>("stats");
        let pools = self.source.get::<Vec<PoolRecord>>("pools");
        let (stats, pools) = match (stats, pools) {
            (Ok(s), Ok(p)) => (s, p),
            (Err(e), _) | (_, Err(e)) => {
                self.error = Some(e);
                return;
            }
        };
        self.error = None;
        let dt = self
            .prev_at
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        let per_sec = |now: f64, before: f64| {
            if dt > 0.0 {
                (now - before).max(0.0) / dt
            } else {
                0.0
            }
        };
        self.shown = stats
            .into_iter()
            .map(|rec| {
                let (t, c, m) = match self.prev.get(&rec.id) {
                    Some(p) => (
                        per_sec(rec.total as f64, p.total as f64),
                        100.0
                            * per_sec(
                                rec.cpu_time.get().as_secs_f64(),
                                p.cpu_time.get().as_secs_f64(),
                            ),
                        per_sec(rec.cmw_rpr() as f64, p.cmw_rpr() as f64),
                    ),
                    None => (0.0, 0.0, 0.0),
                };
                Shown {
                    rec,
                    total_rate: t,
                    cpu_pct: c,
                    cmw_rate: m,
                }
            })
            .collect();
        self.prev = self
            .shown
            .iter()
            .map(|s| (s.rec.id, s.rec.clone()))
            .collect();
        self.prev_at = Some(now);
        self.pools = pools;
        self.samples += 1;
        self.sort_rows();
    }

    fn sort_rows(&mut self) {
        let col = &COLS[self.sort];
        if self.sort == NAME_COL {
            self.shown.sort_by(|a, b| a.rec.name.cmp(&b.rec.name));
        } else {
            // Largest first; ties by name.
            self.shown.sort_by(|a, b| {
                (col.key)(b)
                    .total_cmp(&(col.key)(a))
                    .then_with(|| a.rec.name.cmp(&b.rec.name))
            });
        }
        if self.reverse {
            self.shown.reverse();
        }
    }

    fn draw(&self, f: &mut Frame<'_>) {
        let pool_rows = self.pools.len() as u16 + 3;
        let [head, wqs, pools, foot] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Min(6),
            Constraint::Length(pool_rows.min(f.area().height / 2)),
            Constraint::Length(1),
        ])
        .areas(f.area());

        let order = if self.reverse {
            "reversed"
        } else {
            "largest first"
        };
        let order = if self.sort == NAME_COL && !self.reverse {
            "a-z"
        } else if self.sort == NAME_COL {
            "z-a"
        } else {
            order
        };
        let mut lines = vec![Line::from(vec![
            Span::styled("cmwq top", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!(
                " - {} - {} workqueues, {} pools - sample {} - sorted by {} ({order})",
                self.title,
                self.shown.len(),
                self.pools.len(),
                self.samples,
                COLS[self.sort].title,
            )),
        ])];
        if let Some(e) = &self.error {
            lines.push(Line::styled(
                format!("error: {e}"),
                Style::new().fg(Color::Red),
            ));
        }
        f.render_widget(Paragraph::new(lines), head);

        let header = Row::new(COLS.iter().enumerate().map(|(i, c)| {
            let style = if i == self.sort {
                Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
            } else {
                Style::new().add_modifier(Modifier::BOLD)
            };
            let text = if i == NAME_COL {
                format!("{:<w$}", c.title, w = c.width as usize)
            } else {
                format!("{:>w$}", c.title, w = c.width as usize)
            };
            Cell::from(text).style(style)
        }));
        let rows = self.shown.iter().map(|s| {
            Row::new(COLS.iter().enumerate().map(|(i, c)| {
                let v = (c.cell)(s);
                if i == NAME_COL {
                    Cell::from(v)
                } else {
                    Cell::from(format!("{v:>w$}", w = c.width as usize))
                }
            }))
        });
        let widths: Vec<Constraint> = COLS.iter().map(|c| Constraint::Length(c.width)).collect();
        f.render_widget(
            Table::new(rows, widths)
                .header(header)
                .block(Block::bordered().title(" workqueues ")),
            wqs,
        );

        let pool_header = Row::new(
            [
                "pool", "cpu", "nice", "workers", "idle", "running", "queued", "busy",
            ]
            .map(|t| Cell::from(t).style(Style::new().add_modifier(Modifier::BOLD))),
        );
        let pool_rows = self.pools.iter().map(|p| {
            let cpu = match p.cpu {
                Some(c) => format!(
                    "{c}{}{}",
                    if p.highpri { "H" } else { "" },
                    // Disassociated: its CPU left the process's CPU set.
                    if p.disassociated { " off" } else { "" }
                ),
                None => "unbound".into(),
            };
            let busy = p
                .busy
                .iter()
                .max_by_key(|b| b.running_for.get())
                .map(|b| {
                    let what = match &b.desc {
                        Some(d) => format!("{} \"{d}\"", short_function(&b.function)),
                        None => short_function(&b.function).to_string(),
                    };
                    let more = match p.busy.len() {
                        1 => String::new(),
                        n => format!(" (+{} more)", n - 1),
                    };
                    format!("{} {}: {what}{more}", b.thread, b.workqueue)
                })
                .unwrap_or_default();
            Row::new([
                Cell::from(p.id.to_string()),
                Cell::from(cpu),
                Cell::from(format!("{:>4}", p.nice)),
                Cell::from(format!("{:>7}", p.nr_workers)),
                Cell::from(format!("{:>4}", p.nr_idle)),
                Cell::from(format!("{:>7}", p.nr_running)),
                Cell::from(format!("{:>6}", p.worklist)),
                Cell::from(busy),
            ])
        });
        f.render_widget(
            Table::new(
                pool_rows,
                [
                    Constraint::Length(4),
                    Constraint::Length(7),
                    Constraint::Length(4),
                    Constraint::Length(7),
                    Constraint::Length(4),
                    Constraint::Length(7),
                    Constraint::Length(6),
                    Constraint::Min(10),
                ],
            )
            .header(pool_header)
            .block(Block::bordered().title(" pools ")),
            pools,
        );

        f.render_widget(
            Paragraph::new(Line::styled(
                "q quit   s/right next sort column   S/left previous   r reverse   \
                 (refresh every second)",
                Style::new().add_modifier(Modifier::DIM),
            )),
            foot,
        );
    }

    /// Handles a key; `false` to quit.
    fn key(&mut self, code: KeyCode, mods: KeyModifiers) -> bool {
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => return false,
            KeyCode::Char('s') | KeyCode::Right => self.sort = (self.sort + 1) % COLS.len(),
            KeyCode::Char('S') | KeyCode::Left => {
                self.sort = (self.sort + COLS.len() - 1) % COLS.len()
            }
            KeyCode::Char('r') => self.reverse = !self.reverse,
            _ => return true,
        }
        self.sort_rows();
        true
    }
}

/// The last named segment of a function's type name, with its closure marker if any
/// (`cmwq::live::sleeper` -> `sleeper`, `app::main::{{closure}}` -> `main::{{closure}}`).
fn short_function(name: &str) -> String {
    let named = name
        .split("::")
        .filter(|s| !s.starts_with('{'))
        .last()
        .unwrap_or(name);
    if name.ends_with("}}") && !named.ends_with("}}") {
        format!("{named}::{{{{closure}}}}")
    } else {
        named.to_string()
    }
}

/// Runs the view until `q`. With `pid`, of that process's endpoint; without, of the demo
/// workload run here.
pub fn run(pid: Option<u32>) -> Result<(), String> {
    let mut live = None;
    let (source, title) = match pid {
        Some(pid) => {
            let mut source = Source::remote(pid)?;
            let hello: Hello = source.get("hello")?;
            (source, format!("pid {pid} ({})", hello.program))
        }
        None => {
            live = Some(crate::live::Live::start().map_err(|e| e.to_string())?);
            (
                Source::Local,
                format!("demo workload in this process (pid {})", std::process::id()),
            )
        }
    };
    let mut app = App {
        source,
        title,
        shown: Vec::new(),
        pools: Vec::new(),
        prev: HashMap::new(),
        prev_at: None,
        sort: 2, // total/s
        reverse: false,
        samples: 0,
        error: None,
    };
    let mut terminal =
        ratatui::try_init().map_err(|e| format!("cannot set up the terminal: {e}"))?;
    let result = event_loop(&mut terminal, &mut app);
    ratatui::restore();
    drop(live);
    result.map_err(|e| format!("terminal: {e}"))
}

fn event_loop(terminal: &mut ratatui::DefaultTerminal, app: &mut App) -> std::io::Result<()> {
    let mut next = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next {
            app.sample();
            next += REFRESH;
            if next < now {
                next = now + REFRESH;
            }
        }
        terminal.draw(|f| app.draw(f))?;
        if event::poll(next.saturating_duration_since(Instant::now()))? {
            if let Event::Key(k) = event::read()? {
                if k.kind == KeyEventKind::Press && !app.key(k.code, k.modifiers) {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_are_shortened() {
        assert_eq!(short_function("cmwq::live::sleeper"), "sleeper");
        assert_eq!(
            short_function("app::main::{{closure}}"),
            "main::{{closure}}"
        );
        assert_eq!(short_function("plain"), "plain");
    }
}
