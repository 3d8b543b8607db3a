//! The sweep's SVG plots: wall time per phase, CPU, bytes and peak memory per user, each
//! against users on log-log axes (plotters' SVG backend; text as `<text>`, no fonts).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::table::{short, thousands};
use super::Measured;

/// One line of a plot: its name and its points (users, value).
type Series = (&'static str, Vec<(f64, f64)>);

/// Colours of the series, in order.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(0, 0, 0),
];

/// Draws every plot of `runs` into `dir`, replacing the files.
pub(super) fn draw_all(dir: &Path, runs: &[Measured]) -> Result<()> {
    let seconds = |f: &dyn Fn(&Measured) -> u64| -> Vec<(f64, f64)> {
        runs.iter().map(|r| (r.users as f64, f(r) as f64 / 1e3)).collect()
    };
    let wall: Vec<Series> = vec![
        ("total", seconds(&|r| r.wall_ms)),
        ("deposits (setup)", seconds(&|r| r.phase_ms.deposits)),
        ("registration", seconds(&|r| r.phase_ms.registration)),
        ("tree signing", seconds(&|r| r.phase_ms.tree_signing)),
        ("deposit signing", seconds(&|r| r.phase_ms.deposit_signing)),
        ("confirmation", seconds(&|r| r.phase_ms.confirmation)),
        ("exits", seconds(&|r| r.phase_ms.exits)),
    ];
    draw(&dir.join("scaling-wall.svg"), "Wall time per phase", "seconds", &wall)?;

    let per_user = |f: &dyn Fn(&Measured) -> Option<f64>| -> Vec<(f64, f64)> {
        runs.iter().filter_map(|r| Some((r.users as f64, f(r)?))).collect()
    };
    let cpu: Vec<Series> = vec![
        ("coordinator", per_user(&|r| Some(r.per_user(r.coordinator_cpu_ms)))),
        ("participants", per_user(&|r| Some(r.per_user(r.participant_cpu_ms?)))),
        ("ledger checks", per_user(&|r| Some(r.per_user(r.ledger_cpu_ms)))),
    ];
    draw(&dir.join("scaling-cpu.svg"), "CPU time per user", "milliseconds per user", &cpu)?;

    let bytes: Vec<Series> = vec![
        ("to each participant", per_user(&|r| Some(r.per_user(r.bytes_to_participants)))),
        ("from each participant", per_user(&|r| Some(r.per_user(r.bytes_from_participants)))),
    ];
    draw(&dir.join("scaling-bytes.svg"), "Bytes per user, each way", "bytes per user", &bytes)?;

    let memory: Vec<Series> =
        vec![("peak memory", per_user(&|r| Some(r.per_user(r.peak_rss_bytes) / 1024.0)))];
    draw(
        &dir.join("scaling-memory.svg"),
        "Peak memory per user (whole process)",
        "KiB per user",
        &memory,
    )
}

/// Draws `series` against users on log-log axes into the SVG file `path`. Points that
/// are not positive cannot sit on a log axis and are left out.
fn draw(path: &Path, title: &str, y_desc: &str, series: &[Series]) -> Result<()> {
    let positive = |&(x, y): &(f64, f64)| x > 0.0 && y > 0.0 && y.is_finite();
    let points = || series.iter().flat_map(|(_, p)| p.iter().copied().filter(positive));
    let (x_lo, x_hi) = span(points().map(|(x, _)| x));
    let (y_lo, y_hi) = span(points().map(|(_, y)| y));
    // Labels at every size measured, and at 1, 2, 5 times a power of ten up the side.
    let mut sizes: Vec<f64> = points().map(|(x, _)| x).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    let x_axis = (x_lo..x_hi).log_scale().with_key_points(sizes);
    let y_axis = (y_lo..y_hi)
        .log_scale()
        .with_key_points(ticks(y_lo, y_hi, &[1.0, 2.0, 5.0]))
        .with_light_points(ticks(y_lo, y_hi, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        // The legend beside the plot, never over a line.
        let (plot, legend) = root.split_horizontally(720);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x_axis, y_axis)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("users")
            .y_desc(y_desc)
            .x_label_formatter(&|x| thousands(x.round() as u64))
            .y_label_formatter(&|y| short(*y))
            .draw()
            .map_err(plot_error)?;
        for (k, (_, line)) in series.iter().enumerate() {
            let colour = COLOURS[k % COLOURS.len()];
            let line: Vec<(f64, f64)> = line.iter().copied().filter(positive).collect();
            chart
                .draw_series(LineSeries::new(line.iter().copied(), colour.stroke_width(2)))
                .map_err(plot_error)?;
            chart
                .draw_series(line.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(plot_error)?;
        }
        draw_legend(&legend, series)?;
        root.present().map_err(plot_error)?;
    }
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

/// The names of `series` in their colours, one under the other, on `area`.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, series: &[Series]) -> Result<()> {
    for (k, (name, _)) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let y = 60 + 24 * k as i32;
        area.draw(&PathElement::new(vec![(4, y), (26, y)], colour.stroke_width(2)))
            .map_err(plot_error)?;
        area.draw(&Text::new(*name, (32, y - 7), ("sans-serif", 14))).map_err(plot_error)?;
    }
    Ok(())
}

/// A log axis' range around `values`: a little room on both sides, a decade where
/// there is a single value or none.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (1.0, 10.0);
    }
    if hi <= lo {
        return (lo / 3.0, hi * 3.0);
    }
    (lo / 1.5, hi * 1.5)
}

/// The values `m` × 10^k in `lo..=hi` for every multiplier `m` in `multipliers`, in
/// increasing order.
fn ticks(lo: f64, hi: f64, multipliers: &[f64]) -> Vec<f64> {
    let mut out = Vec::new();
    if !(lo > 0.0 && hi >= lo && hi.is_finite()) {
        return out;
    }
    let mut power = 10f64.powi(lo.log10().floor() as i32);
    while power <= hi {
        out.extend(multipliers.iter().map(|m| m * power).filter(|v| (lo..=hi).contains(v)));
        power *= 10.0;
    }
    out
}

/// A plotters error as an `anyhow` one.
fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing a plot: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_axis_spans_its_values_with_room() {
        assert_eq!(span([10.0, 1000.0].into_iter()), (10.0 / 1.5, 1500.0));
        assert_eq!(span([5.0].into_iter()), (5.0 / 3.0, 15.0));
        assert_eq!(span(std::iter::empty()), (1.0, 10.0));
    }

    #[test]
    fn ticks_are_one_two_five_times_a_power_of_ten_inside_the_range() {
        let rounded = |v: Vec<f64>| v.iter().map(|x| (x * 1e6).round() / 1e6).collect::<Vec<_>>();
        assert_eq!(rounded(ticks(0.03, 3.0, &[1.0, 2.0, 5.0])), [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]);
        assert_eq!(rounded(ticks(30.0, 200.0, &[1.0, 2.0, 5.0])), [50.0, 100.0, 200.0]);
        assert_eq!(ticks(0.0, 1.0, &[1.0]), Vec::<f64>::new());
    }
}
