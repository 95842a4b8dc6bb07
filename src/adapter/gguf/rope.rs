//! The row permutation llama.cpp's converter applies to llama-arch q/k weights (and so to the
//! `lora_b` of q/k adapters, since `permute(B·A) = permute(B)·A`): Hugging Face stores each
//! head's rotary pairs half a head apart (`rotate_half`), ggml's NORM RoPE wants them adjacent.
//! Within each head of `hd` rows, new row `2i + s` is old row `s·hd/2 + i`.

use crate::error::{Error, Result};

/// Which old row each new row comes from, for `rows` rows in `heads` heads.
fn source_rows(rows: usize, heads: usize) -> Result<Vec<usize>> {
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(Error::Invalid(format!(
            "cannot apply the RoPE row permutation: {rows} rows do not split into {heads} heads of an even size (wrong head count in the base config?)"
        )));
    }
    let hd = rows / heads;
    let half = hd / 2;
    let mut src = Vec::with_capacity(rows);
    for h in 0..heads {
        for i in 0..half {
            for s in 0..2 {
                src.push(h * hd + s * half + i);
            }
        }
    }
    Ok(src)
}

/// Permute the rows of a row-major `rows × cols` matrix into ggml's order (`inverse = false`)
/// or back to Hugging Face's (`inverse = true`).
pub fn permute_rows(data: &[f32], cols: usize, heads: usize, inverse: bool) -> Result<Vec<f32>> {
    let rows = data.len().checked_div(cols).unwrap_or(0);
    let src = source_rows(rows, heads)?;
    let mut out = vec![0.0f32; data.len()];
    for (new, &old) in src.iter().enumerate() {
        let (to, from) = if inverse { (old, new) } else { (new, old) };
        out[to * cols..(to + 1) * cols].copy_from_slice(&data[from * cols..(from + 1) * cols]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The converter's `permute`: reshape rows to (heads, 2, hd/2), swap the last two axes.
    fn reshape_swap(data: &[f32], cols: usize, heads: usize) -> Vec<f32> {
        let rows = data.len() / cols;
        let hd = rows / heads;
        let mut out = Vec::with_capacity(data.len());
        for h in 0..heads {
            for i in 0..hd / 2 {
                for s in 0..2 {
                    let r = h * hd + s * (hd / 2) + i;
                    out.extend_from_slice(&data[r * cols..(r + 1) * cols]);
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_reshape_definition_and_inverts() {
        let (rows, cols, heads) = (24, 3, 2);
        let data: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let p = permute_rows(&data, cols, heads, false).unwrap();
        assert_eq!(p, reshape_swap(&data, cols, heads));
        // head 0, hd 12: rows 0, 6, 1, 7, ...
        assert_eq!(&p[..2 * cols], &[0., 1., 2., 18., 19., 20.]);
        assert_eq!(permute_rows(&p, cols, heads, true).unwrap(), data);
        assert!(permute_rows(&data, cols, 5, false).is_err());
        assert!(permute_rows(&data, cols, 0, false).is_err());
    }
}
