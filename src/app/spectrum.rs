//! `info --spectrum` and `--plot`: an adapter's energy kept versus rank per block group
//! (`ops::spectrum`), and its picture: one curve per group, the `sv_fro` threshold as a dashed
//! line and the rank `resize --method sv_fro --param X` picks (the group's largest) as a dot.
//! SVG or PNG by the file's extension, written atomically; text is drawn with a small font
//! embedded in the binary (an ASCII subset of DejaVu Sans, `assets/`), so no system font is
//! needed.

use super::error::{AppError, Result, ResultExt};
use super::input::{InputRef, LoadOptions};
use super::session::Session;
use crate::adapter::Format;
use crate::error::Error;
use crate::io::atomic::write_bytes_atomic;
use crate::ops::spectrum::{spectrum, Spectrum};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-subset.ttf");
const SIZE: (u32, u32) = (1000, 640);

pub struct SpectrumRequest {
    pub input: InputRef,
    pub from: Option<Format>,
    /// The `resize --method sv_fro --param X` threshold whose ranks are marked.
    pub sv_fro: f64,
    /// Draw the picture here (`.svg` or `.png`).
    pub plot: Option<PathBuf>,
}

impl Session<'_> {
    /// The spectrum of an adapter (and its plot, when asked for).
    pub fn spectrum(&self, req: &SpectrumRequest) -> Result<Spectrum> {
        let loaded = self.load(
            &req.input,
            &LoadOptions {
                from: req.from,
                skip_unknown: true,
                base: None,
                // singular values do not depend on a row permutation (GGUF q/k)
                layout_only: true,
            },
        )?;
        let s = spectrum(&loaded.adapter, req.sv_fro)
            .with_context(|| format!("computing the spectrum of {}", loaded.label))?;
        if let Some(p) = &req.plot {
            plot(&s, &loaded.label, p).with_context(|| format!("drawing {}", p.display()))?;
        }
        Ok(s)
    }
}

/// Draw `s` into `out` (`.svg` or `.png`).
pub fn plot(s: &Spectrum, title: &str, out: &Path) -> Result<()> {
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    register_font();
    let bytes = match ext.as_deref() {
        Some("svg") => {
            let mut text = String::new();
            {
                let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
                draw(s, title, root)?;
            }
            text.into_bytes()
        }
        Some("png") => {
            let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
                draw(s, title, root)?;
            }
            encode_png(&rgb)?
        }
        _ => {
            return Err(AppError::Lib(Error::bad_option(
                "plot",
                format!(
                    "{}: the plot is written as .svg or .png (by the file's extension)",
                    out.display()
                ),
            )))
        }
    };
    Ok(write_bytes_atomic(out, &bytes)?)
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // the font is ours and known good; a failure would only lose the labels
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn encode_png(rgb: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, SIZE.0, SIZE.1);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let fail = |e: png::EncodingError| AppError::Lib(Error::Invalid(format!("PNG encoding: {e}")));
    let mut w = enc.write_header().map_err(fail)?;
    w.write_image_data(rgb).map_err(fail)?;
    w.finish().map_err(fail)?;
    Ok(out)
}

fn draw<DB: DrawingBackend>(
    s: &Spectrum,
    title: &str,
    root: DrawingArea<DB, plotters::coord::Shift>,
) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| AppError::Lib(Error::Invalid(format!("plotting: {e}")));
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let max_rank = s
        .groups
        .iter()
        .map(|g| g.max_rank)
        .max()
        .unwrap_or(1)
        .max(1);
    let caption = format!("Frobenius norm kept vs rank per block group: {title}");
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..max_rank as f64, 0f64..1.02f64)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("rank")
        .x_labels(max_rank.min(16) + 1)
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .y_desc("fraction of ||dW||_F kept")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| fail(&e))?;
    // the sv_fro threshold
    let x = s.sv_fro;
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, x), (max_rank as f64, x)],
            6,
            4,
            BLACK.mix(0.6).stroke_width(1),
        ))
        .map_err(|e| fail(&e))?
        .label(format!("sv_fro {x}: dot = rank resize picks (group max)"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.mix(0.6)));
    for (i, g) in s.groups.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = g
            .energy
            .iter()
            .enumerate()
            .map(|(k, &e)| (k as f64, e))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(format!(
                "{} ({} modules, r<={})",
                g.group, g.modules, g.max_rank
            ))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        let k = g.sv_fro_max.min(g.max_rank);
        chart
            .draw_series(std::iter::once(Circle::new(
                (k as f64, g.energy[k]),
                5,
                color.filled(),
            )))
            .map_err(|e| fail(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
