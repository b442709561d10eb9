//! The run as a picture: order answers per second (admitted, refused, reserved) and the
//! queue's depth over time, as an SVG file.

use std::path::Path;

use plotters::prelude::*;

use crate::sampler::Sample;
use crate::tally::Second;

/// One per-second series: its legend, colour and value.
type Line = (&'static str, RGBColor, fn(&Second) -> u64);

/// Draws the chart into `path`.
pub fn draw(
    path: &Path,
    title: &str,
    timeline: &[Second],
    samples: &[Sample],
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("chart {}: {e}", path.display());
    let seconds = timeline.len().max(1) as f64;
    let end = samples.last().map_or(seconds, |s| s.t.max(seconds));
    let per_second_max = timeline
        .iter()
        .map(|s| s.admitted.max(s.refused).max(s.reserved))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let depth_max = samples.iter().map(|s| s.queued).max().unwrap_or(0).max(1) as f64;

    let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .right_y_label_area_size(64)
        .build_cartesian_2d(0f64..end, 0f64..per_second_max * 1.1)
        .map_err(|e| fail(&e))?
        .set_secondary_coord(0f64..end, 0f64..depth_max * 1.1);
    chart
        .configure_mesh()
        .x_desc("seconds since the crowd started")
        .y_desc("order answers per second")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .configure_secondary_axes()
        .y_desc("queue depth")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| fail(&e))?;

    let series: [Line; 3] = [
        ("admitted/s", BLUE, |s| s.admitted),
        ("refused/s", RED, |s| s.refused),
        ("reserved/s", GREEN, |s| s.reserved),
    ];
    for (label, color, value) in series {
        let points = timeline
            .iter()
            .enumerate()
            .map(|(i, s)| (i as f64 + 0.5, value(s) as f64));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    let depth = samples.iter().map(|s| (s.t, s.queued as f64));
    chart
        .draw_secondary_series(LineSeries::new(depth, BLACK.mix(0.6).stroke_width(1)))
        .map_err(|e| fail(&e))?
        .label("queue depth (right axis)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.6)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}
