//! A round's timeline drawn by hand as one self-contained SVG: a title and summary, a
//! legend, a time axis in seconds, the registration window, then one row per batch with
//! its phases as coloured bars, a red line where an attempt was aborted and retried, a ▼
//! with a count where members were excluded, and the batch's outcome on the right.

use std::time::Duration;

use super::{BatchTimeline, Outcome, Phase, RoundTimeline};

/// Batch rows drawn at most; the rest are summed up in one line.
pub const MAX_ROWS: usize = 200;

const WIDTH: f64 = 1040.0;
const LABELS: f64 = 150.0;
const PLOT: f64 = 640.0;
const ROW: f64 = 24.0;
const BAR: f64 = 12.0;
const LEGEND_ROW: f64 = 18.0;
const LEGEND_COLUMNS: usize = 3;
/// Characters of a reason shown in the outcome column (the whole one is in its tooltip).
const REASON_CHARS: usize = 28;

const REGISTRATION_COLOUR: &str = "#9aa5b1";
const ABORT_COLOUR: &str = "#d62728";
const EXCLUSION_COLOUR: &str = "#8c2d04";

fn colour(phase: Phase) -> &'static str {
    match phase {
        Phase::Renoncing => "#ff7f0e",
        Phase::SigningTree => "#1f77b4",
        Phase::SigningDeposits => "#2ca02c",
        Phase::Broadcasting => "#9467bd",
        Phase::Finalized => "#bcbd22",
    }
}

/// `text` safe inside an SVG element or attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0.
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `text`, with an ellipsis if cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The SVG being written, and how time maps to x.
struct Canvas {
    out: String,
    /// Seconds the plot spans.
    total: f64,
}

impl Canvas {
    fn x(&self, t: Duration) -> f64 {
        LABELS + (t.as_secs_f64() / self.total).clamp(0.0, 1.0) * PLOT
    }

    fn text(&mut self, x: f64, y: f64, attrs: &str, text: &str) {
        self.out.push_str(&format!(
            "<text x=\"{x:.1}\" y=\"{y:.1}\" {attrs}>{}</text>\n",
            escape(text)
        ));
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, title: &str) {
        self.out.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{fill}\">\
             <title>{}</title></rect>\n",
            escape(title)
        ));
    }

    fn line(&mut self, x: f64, y1: f64, y2: f64, stroke: &str, extra: &str) {
        self.out.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{y1:.1}\" x2=\"{x:.1}\" y2=\"{y2:.1}\" stroke=\"{stroke}\" {extra}/>\n"
        ));
    }

    /// A bar from `start` to `end` on the row whose top is `top` (at least a sliver wide,
    /// so a phase that took no time still shows).
    fn bar(&mut self, top: f64, start: Duration, end: Duration, fill: &str, title: &str) {
        let (x0, x1) = (self.x(start), self.x(end));
        let y = top + (ROW - BAR) / 2.0;
        self.rect(x0, y, (x1 - x0).max(1.0), BAR, fill, title);
    }
}

/// Draws `round` (see [`RoundTimeline::svg`]).
pub(super) fn draw(round: &RoundTimeline) -> String {
    let total = round.last.as_secs_f64().max(0.001);
    let drawn: Vec<&BatchTimeline> = round.batches.values().take(MAX_ROWS).collect();
    let hidden = round.batches.len().saturating_sub(drawn.len()) + round.untracked_batches;
    let rows = 1 + drawn.len().max(1) + usize::from(hidden > 0);

    let legend_items = Phase::ALL.len() + 3; // Registration, the phases, two markers.
    let legend_rows = legend_items.div_ceil(LEGEND_COLUMNS);
    let legend_top = 62.0;
    let axis = legend_top + legend_rows as f64 * LEGEND_ROW + 22.0;
    let first_row = axis + 6.0;
    let height = first_row + rows as f64 * ROW + 16.0;

    let mut c = Canvas { out: String::new(), total };
    c.out.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {WIDTH:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n"
    ));
    c.rect(0.0, 0.0, WIDTH, height, "white", &format!("round {}", round.round));
    header(&mut c, round);
    legend(&mut c, legend_top);
    time_axis(&mut c, axis, first_row + rows as f64 * ROW);

    let mut top = first_row;
    registration_row(&mut c, round, top);
    top += ROW;
    if drawn.is_empty() {
        c.text(LABELS + 4.0, top + 16.0, "fill=\"#555\"", "no batches formed");
        top += ROW;
    }
    for batch in &drawn {
        batch_row(&mut c, batch, round.last, top);
        top += ROW;
    }
    if hidden > 0 {
        let note = format!("… {hidden} more batches not drawn (the first {MAX_ROWS} are)");
        c.text(LABELS + 4.0, top + 16.0, "fill=\"#555\"", &note);
    }
    c.out.push_str("</svg>\n");
    c.out
}

fn header(c: &mut Canvas, round: &RoundTimeline) {
    let batches = round.batches_formed.max(round.batches.len() + round.untracked_batches);
    let title = format!(
        "Cohort round {}: {} users registered, {} batches",
        round.round, round.registrations, batches
    );
    c.text(12.0, 24.0, "font-size=\"16\" font-weight=\"bold\"", &title);
    let confirmed = round.count(|o| matches!(o, Outcome::Confirmed { .. }));
    let finalized = round.count(|o| matches!(o, Outcome::Finalized { .. }));
    let failed = round.count(|o| matches!(o, Outcome::Failed { .. }));
    let mut summary = format!(
        "{confirmed} confirmed, {finalized} broadcast unconfirmed, {failed} failed; \
         {} retried ({} attempts aborted); {} members excluded; {} shown",
        round.retried_batches(),
        round.aborted_attempts(),
        round.excluded(),
        secs(round.last),
    );
    if !round.complete {
        summary.push_str(" (joined mid-round: times count from the first event seen)");
    }
    c.text(12.0, 44.0, "fill=\"#333\"", &summary);
}

/// A legend entry's symbol.
enum Key {
    Registration,
    Phase(Phase),
    Abort,
    Exclusion,
}

fn legend(c: &mut Canvas, top: f64) {
    let width = (WIDTH - 24.0) / LEGEND_COLUMNS as f64;
    let mut items = vec![(Key::Registration, "registration window (round)".to_string())];
    items.extend(Phase::ALL.map(|p| (Key::Phase(p), format!("{}: {}", p.name(), p.meaning()))));
    items.push((Key::Abort, "attempt aborted, retried without the culprits".to_string()));
    items.push((Key::Exclusion, "n members excluded (the count beside it)".to_string()));
    for (i, (key, label)) in items.iter().enumerate() {
        let x = 12.0 + (i % LEGEND_COLUMNS) as f64 * width;
        let y = top + (i / LEGEND_COLUMNS) as f64 * LEGEND_ROW;
        match key {
            Key::Registration => c.rect(x, y + 1.0, 10.0, 10.0, REGISTRATION_COLOUR, label),
            Key::Phase(p) => c.rect(x, y + 1.0, 10.0, 10.0, colour(*p), label),
            Key::Abort => c.line(x + 5.0, y, y + 12.0, ABORT_COLOUR, "stroke-width=\"2\""),
            Key::Exclusion => triangle(c, x + 5.0, y + 2.0),
        }
        c.text(x + 15.0, y + 10.0, "class=\"legend\"", label);
    }
}

fn triangle(c: &mut Canvas, x: f64, y: f64) {
    c.out.push_str(&format!(
        "<path d=\"M{:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z\" fill=\"{EXCLUSION_COLOUR}\"/>\n",
        x - 4.0,
        y,
        x + 4.0,
        y,
        x,
        y + 6.0
    ));
}

/// A tick step of 1, 2 or 5 times a power of ten giving at most about ten ticks.
fn tick_step(total: f64) -> f64 {
    let raw = (total / 10.0).max(1e-3);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(raw)
}

fn time_axis(c: &mut Canvas, y: f64, bottom: f64) {
    let step = tick_step(c.total);
    let decimals = if step >= 1.0 {
        0
    } else if step >= 0.1 {
        1
    } else if step >= 0.01 {
        2
    } else {
        3
    };
    c.out.push_str(&format!(
        "<line x1=\"{LABELS:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#333\"/>\n",
        LABELS + PLOT
    ));
    let mut k = 0u32;
    while f64::from(k) * step <= c.total + step * 1e-9 && k <= 20 {
        let t = f64::from(k) * step;
        let x = LABELS + t / c.total * PLOT;
        c.line(x, y, bottom, "#e3e3e3", "");
        c.line(x, y - 4.0, y, "#333", "");
        c.text(x, y - 7.0, "text-anchor=\"middle\" fill=\"#333\"", &format!("{t:.decimals$} s"));
        k += 1;
    }
}

fn registration_row(c: &mut Canvas, round: &RoundTimeline, top: f64) {
    c.text(12.0, top + 16.0, "", "registration");
    let end = round.registration_closed.unwrap_or(round.last);
    let title = match round.registration_closed {
        Some(at) => format!("registration: 0 s – {}, {} accepted", secs(at), round.registrations),
        None => format!("registration open, {} accepted so far", round.registrations),
    };
    if round.complete {
        c.bar(top, Duration::ZERO, end, REGISTRATION_COLOUR, &title);
    }
}

fn batch_row(c: &mut Canvas, batch: &BatchTimeline, last: Duration, top: f64) {
    let label = format!("batch {}, {} members", batch.batch, batch.members);
    c.text(12.0, top + 16.0, "class=\"batch\"", &label);
    for span in &batch.spans {
        let end = span.end.unwrap_or(last);
        let title = format!(
            "batch {} attempt {}: {} ({}), {} – {}{}",
            batch.batch,
            span.attempt,
            span.phase.name(),
            span.phase.meaning(),
            secs(span.start),
            secs(end),
            if span.end.is_none() { ", still running" } else { "" }
        );
        c.bar(top, span.start, end, colour(span.phase), &title);
    }
    for abort in &batch.aborts {
        let x = c.x(abort.at);
        c.out.push_str(&format!(
            "<g class=\"abort\"><title>{}</title>",
            escape(&format!(
                "attempt {} aborted at {}: {}",
                abort.attempt,
                secs(abort.at),
                abort.reason
            ))
        ));
        c.line(x, top + 4.0, top + ROW - 4.0, ABORT_COLOUR, "stroke-width=\"2\"");
        c.out.push_str("</g>\n");
    }
    for exclusion in &batch.exclusions {
        let x = c.x(exclusion.at);
        c.out.push_str(&format!(
            "<g class=\"exclusion\"><title>{}</title>",
            escape(&format!(
                "{} excluded from attempt {} at {}: {}",
                exclusion.count,
                exclusion.attempt,
                secs(exclusion.at),
                exclusion.reason
            ))
        ));
        triangle(c, x, top);
        let attrs = format!("font-size=\"9\" font-weight=\"bold\" fill=\"{EXCLUSION_COLOUR}\"");
        c.text(x + 5.0, top + 6.5, &attrs, &exclusion.count.to_string());
        c.out.push_str("</g>\n");
    }
    outcome(c, batch, top);
}

fn outcome(c: &mut Canvas, batch: &BatchTimeline, top: f64) {
    let attempts = match batch.attempts {
        1 => "1 attempt".to_string(),
        n => format!("{n} attempts"),
    };
    let (fill, text, full) = match &batch.outcome {
        Outcome::Running => ("#555", format!("running, {attempts}"), String::new()),
        Outcome::Finalized { txid } => {
            ("#6b6b00", format!("broadcast, {attempts}"), format!("funding txid {txid}"))
        }
        Outcome::Confirmed { txid, height } => {
            let funding = txid.as_ref().map(|t| format!(", funding txid {t}")).unwrap_or_default();
            ("#1a7f37", format!("✓ confirmed, {attempts}"), format!("height {height}{funding}"))
        }
        Outcome::Failed { reason } => {
            let reason = reason.to_string();
            ("#b00020", format!("✗ failed: {}", shorten(&reason, REASON_CHARS)), reason)
        }
    };
    let x = LABELS + PLOT + 10.0;
    c.out.push_str(&format!("<g class=\"outcome\"><title>{}</title>", escape(&full)));
    c.text(x, top + 16.0, &format!("fill=\"{fill}\""), &text);
    c.out.push_str("</g>\n");
}
