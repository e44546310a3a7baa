//! Small charts for the audit pages, drawn on the server as inline SVG: no script, no
//! library, no CDN, so they render under the pages' Content-Security-Policy and in an
//! air-gapped cluster. Each carries a `<title>` saying in words what it shows.

use std::fmt::Write as _;

use super::ui::escape;

const GREEN: &str = "#43a047";
const RED: &str = "#e53935";
const BLUE: &str = "#1e88e5";
const GREY: &str = "#757575";

/// A horizontal bar: the heal rate (0..=1) of an action.
pub fn rate_bar(rate: f64, label: &str) -> String {
    let rate = rate.clamp(0.0, 1.0);
    let width = (rate * 120.0).round();
    format!(
        "<svg class=rate width=160 height=14 viewBox=\"0 0 160 14\" role=img><title>{}</title>\
         <rect x=0 y=2 width=120 height=10 fill=\"#333\"/><rect x=0 y=2 width={width} height=10 fill=\"{GREEN}\"/>\
         <text x=126 y=12 font-size=11 fill=\"#ccc\">{:.0}%</text></svg>",
        escape(label),
        rate * 100.0
    )
}

/// Day-by-day columns: attempts (grey) and the healed part of them (green), oldest left.
pub fn daily_trend(days: &[(usize, usize)], label: &str) -> String {
    let most = days.iter().map(|d| d.0).max().unwrap_or(0).max(1) as f64;
    let step = 6.0;
    let height = 24.0;
    let mut bars = String::new();
    for (i, (attempts, healed)) in days.iter().enumerate() {
        let x = i as f64 * step;
        let h_all = (*attempts as f64 / most * height).round();
        let h_healed = (*healed as f64 / most * height).round();
        let _ = write!(
            bars,
            "<rect class=day x={x} y={} width=5 height={h_all} fill=\"{GREY}\"><title>{attempts} tried, {healed} healed</title></rect>\
             <rect x={x} y={} width=5 height={h_healed} fill=\"{GREEN}\"/>",
            height - h_all,
            height - h_healed,
        );
    }
    let width = (days.len() as f64 * step).max(step);
    format!(
        "<svg class=trend width={width} height={height} viewBox=\"0 0 {width} {height}\" role=img><title>{}</title>{bars}</svg>",
        escape(label)
    )
}

/// The colour of a poll's reading: done or resolved green, failed or still firing red,
/// progressing blue, unknown grey.
fn colour(status: &str) -> &'static str {
    match status {
        "done" | "resolved" => GREEN,
        "failed" | "still_firing" => RED,
        "progressing" => BLUE,
        _ => GREY,
    }
}

/// One poll of a verification: seconds after salve's write, the rollout's status and
/// the alert's, each with its detail.
pub struct PollMark<'a> {
    pub after_seconds: f64,
    pub rollout: (&'a str, &'a str),
    pub alert: (&'a str, &'a str),
}

/// A verification's polls on a time line: one row for the rollout, one for the alert,
/// a dot per poll coloured by what it read (its detail on hover).
pub fn poll_timeline(polls: &[PollMark<'_>], window_seconds: f64) -> String {
    let span = polls
        .iter()
        .map(|p| p.after_seconds)
        .fold(window_seconds, f64::max)
        .max(1.0);
    let (left, width) = (70.0, 420.0);
    let mut dots = String::new();
    for p in polls {
        let x = left + p.after_seconds / span * width;
        for (row, (status, detail)) in [(0.0, p.rollout), (1.0, p.alert)] {
            let _ = write!(
                dots,
                "<circle class=poll cx={x:.1} cy={} r=5 fill=\"{}\"><title>{:.1}s: {}: {}</title></circle>",
                14.0 + row * 20.0,
                colour(status),
                p.after_seconds,
                escape(&status.replace('_', " ")),
                escape(detail),
            );
        }
    }
    format!(
        "<svg class=polls width=520 height=56 viewBox=\"0 0 520 56\" role=img>\
         <title>{} polls over {span:.0}s after salve's change</title>\
         <text x=0 y=18 font-size=11 fill=\"#ccc\">rollout</text><text x=0 y=38 font-size=11 fill=\"#ccc\">alert</text>\
         <line x1={left} y1=50 x2={} y2=50 stroke=\"#555\"/><text x={left} y=56 font-size=9 fill=\"#999\">0s</text>\
         <text x={} y=56 font-size=9 fill=\"#999\">{span:.0}s</text>{dots}</svg>",
        polls.len(),
        left + width,
        left + width - 20.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_inline_svg_that_say_what_they_show() {
        let bar = rate_bar(0.5, "scale healed 1 of 2");
        assert!(bar.starts_with("<svg") && bar.contains("width=60 ") && bar.contains("50%"));
        let trend = daily_trend(&[(2, 1), (0, 0), (4, 4)], "<x>");
        assert_eq!(trend.matches("class=day").count(), 3);
        assert!(trend.contains("<title>&lt;x&gt;</title>"));
        let polls = poll_timeline(
            &[
                PollMark {
                    after_seconds: 1.0,
                    rollout: ("progressing", "1 of 3 updated"),
                    alert: ("still_firing", "Prometheus"),
                },
                PollMark {
                    after_seconds: 9.0,
                    rollout: ("done", "rolled out"),
                    alert: ("resolved", "Prometheus"),
                },
            ],
            10.0,
        );
        assert_eq!(polls.matches("<circle class=poll ").count(), 4);
        assert!(polls.contains("9.0s: resolved: Prometheus"));
        assert!(!polls.contains("<script"));
    }
}
