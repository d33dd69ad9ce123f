//! The live subcommands: `spotpool events` (the event stream, a line per event) and
//! `spotpool status --watch` (the status drawn again after each event).

use super::{Call, Target, render_status, send, unreachable_daemon};
use http_body_util::BodyExt;
use std::process::ExitCode;
use std::time::Duration;

/// `spotpool events`: which events.
#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Keep printing events as they happen (without: the events kept, then exit).
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only this user's events.
    #[arg(long)]
    user: Option<String>,
    /// Only this tier's.
    #[arg(long)]
    tier: Option<String>,
    /// Only these kinds: `claim.ready,move.*`.
    #[arg(long)]
    kind: Option<String>,
    /// Start after this event id.
    #[arg(long, value_name = "ID")]
    after: Option<i64>,
}

/// `spotpool events`: the event stream, one line per event; with `follow`, until interrupted
/// or the daemon closes the stream (exit 1, with its reason), else until caught up.
pub fn events(target: &Target, args: &EventsArgs) -> ExitCode {
    use std::io::Write;
    // `spotpool events | head`: the reader leaving ends it quietly.
    stream_events(target, args, &mut |line| {
        writeln!(std::io::stdout(), "{line}").is_ok()
    })
}

/// Reads the event stream, handing each event as a line to `sink` until it returns false (the
/// exit code is then success), the stream ends, or the daemon closes it (exit 1, its reason on
/// standard error).
fn stream_events(
    target: &Target,
    args: &EventsArgs,
    sink: &mut dyn FnMut(String) -> bool,
) -> ExitCode {
    let mut query = vec![format!("follow={}", args.follow)];
    if let Some(user) = &args.user {
        query.push(format!("user={}", spotpool::url::component(user)));
    }
    if let Some(tier) = &args.tier {
        query.push(format!("tier={}", spotpool::url::component(tier)));
    }
    if let Some(kind) = &args.kind {
        query.push(format!("kind={}", spotpool::url::component(kind)));
    }
    // Without --follow the recent history is what one asks for; with it, what comes next.
    match args.after {
        Some(after) => query.push(format!("after={after}")),
        None if !args.follow => query.push("after=0".into()),
        None => {}
    }
    let call = Call {
        method: "GET",
        path: format!("/v1/events?{}", query.join("&")),
        body: None,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return unreachable_daemon(target, &e),
    };
    runtime.block_on(async {
        // The answer's head comes at once (its body may then stream for ever).
        let response =
            match tokio::time::timeout(Duration::from_secs(30), send(target, &call)).await {
                Ok(Ok(response)) => response,
                Ok(Err(code)) => return code,
                Err(e) => return unreachable_daemon(target, &e),
            };
        let status = response.status().as_u16();
        let mut body = response.into_body();
        if !(200..300).contains(&status) {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            eprintln!(
                "spotpool: GET /v1/events answered {status} {}: {}",
                value["error"]["code"].as_str().unwrap_or("error"),
                value["error"]["message"].as_str().unwrap_or("")
            );
            return ExitCode::from(1);
        }
        // Raw bytes until a whole event: a character may be split between frames, and an
        // event ends with an empty line, LF or CRLF.
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                eprintln!("spotpool: the event stream broke off");
                return ExitCode::from(2);
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buffer.extend_from_slice(&data);
            while let Some((end, gap)) = event_end(&buffer) {
                let block: Vec<u8> = buffer.drain(..end + gap).collect();
                let block = String::from_utf8_lossy(&block[..end]).replace('\r', "");
                match format_event(&block) {
                    Formatted::Line(line) => {
                        if !sink(line) {
                            return ExitCode::SUCCESS;
                        }
                    }
                    Formatted::Nothing => {}
                    Formatted::Closed(reason) => {
                        eprintln!("spotpool: the daemon closed the stream: {reason}");
                        return ExitCode::from(1);
                    }
                }
            }
        }
        ExitCode::SUCCESS
    })
}

/// Where the first event in `buffer` ends, and the blank line's length (LF LF or CRLF CRLF).
fn event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let find = |needle: &[u8]| buffer.windows(needle.len()).position(|w| w == needle);
    match (find(b"\n\n"), find(b"\r\n\r\n")) {
        (Some(lf), Some(crlf)) if crlf < lf => Some((crlf, 4)),
        (Some(lf), _) => Some((lf, 2)),
        (None, Some(crlf)) => Some((crlf, 4)),
        (None, None) => None,
    }
}

/// What an SSE block comes to.
enum Formatted {
    /// An event, as a line.
    Line(String),
    /// A comment (keep-alive) or something without an event.
    Nothing,
    /// The daemon's `close`: its reason and detail.
    Closed(String),
}

/// One SSE block (its `data` lines joined) as a line.
fn format_event(block: &str) -> Formatted {
    let event = (block.lines()).find_map(|l| l.strip_prefix("event:").map(str::trim));
    let Some(event) = event else {
        return Formatted::Nothing;
    };
    let data: Vec<&str> = (block.lines())
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    let data: serde_json::Value = serde_json::from_str(&data.join("\n")).unwrap_or_default();
    let text = |key: &str| data[key].as_str().unwrap_or("-").to_string();
    Formatted::Line(match event {
        "close" => return Formatted::Closed(format!("{}: {}", text("reason"), text("detail"))),
        "reset" => format!(
            "(older events were pruned: the stream resumes after event {})",
            data["horizon"]
        ),
        _ => format!(
            "{} {:>7} {:<28} user={} instance={} {}",
            text("at"),
            data["id"],
            event,
            text("user_id"),
            text("instance_id"),
            text("message")
        ),
    })
}

/// `spotpool status --watch`: the status, drawn again after each event (at most once a
/// second), with the newest events under it, until interrupted or the daemon ends the stream.
pub(super) fn watch_status(target: &Target) -> ExitCode {
    use std::io::{IsTerminal, Write};
    const SHOWN: usize = 10;
    // The stream is read on a thread of its own (the status's calls block on theirs).
    let (tx, rx) = std::sync::mpsc::channel::<Result<String, String>>();
    let reader = target.clone();
    std::thread::spawn(move || {
        // From the oldest kept: the newest of them show at once, and nothing that happens
        // while the stream connects is missed.
        let args = EventsArgs {
            follow: true,
            user: None,
            tier: None,
            kind: None,
            after: Some(0),
        };
        let code = stream_events(&reader, &args, &mut |line| tx.send(Ok(line)).is_ok());
        let _ = tx.send(Err(format!("the event stream ended ({code:?})")));
    });
    let terminal = std::io::stdout().is_terminal();
    let mut recent: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    loop {
        let text = match render_status(target) {
            Ok(text) => text,
            Err(code) => return code,
        };
        let mut out = String::new();
        if terminal {
            // Clear the screen and go home.
            out.push_str("\x1b[2J\x1b[H");
        }
        out.push_str(&text);
        out.push_str("recent events:\n");
        for line in &recent {
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
        if std::io::stdout().write_all(out.as_bytes()).is_err()
            || std::io::stdout().flush().is_err()
        {
            return ExitCode::SUCCESS;
        }
        // The next event, then whatever else came within a second: one redraw for a burst.
        let mut take = |event: Result<String, String>| match event {
            Ok(line) => {
                recent.push_back(line);
                if recent.len() > SHOWN {
                    recent.pop_front();
                }
                Ok(())
            }
            Err(why) => Err(why),
        };
        let first = rx
            .recv()
            .unwrap_or_else(|_| Err("the event stream ended".into()));
        if let Err(why) = take(first) {
            eprintln!("spotpool: {why}");
            return ExitCode::from(1);
        }
        let until = std::time::Instant::now() + Duration::from_secs(1);
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(event) => {
                    if let Err(why) = take(event) {
                        eprintln!("spotpool: {why}");
                        return ExitCode::from(1);
                    }
                }
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::event_end;

    #[test]
    fn an_event_ends_at_a_blank_line_of_either_line_ending() {
        assert_eq!(event_end(b"id: 1\nevent: a\n\nid: 2"), Some((14, 2)));
        assert_eq!(event_end(b"id: 1\r\nevent: a\r\n\r\nid: 2"), Some((15, 4)));
        assert_eq!(event_end(b"id: 1\r\nevent: a\r\n"), None, "not yet whole");
        // A character split between two frames waits for its second half.
        let text = "data: {\"message\":\"caf\u{e9}\"}\n\n".as_bytes();
        let (head, tail) = text.split_at(24);
        assert_eq!(event_end(head), None);
        let whole = [head, tail].concat();
        let (end, _) = event_end(&whole).unwrap();
        assert!(
            String::from_utf8(whole[..end].to_vec())
                .unwrap()
                .ends_with("café\"}")
        );
    }
}
