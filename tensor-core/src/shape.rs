use std::fmt;

/// The extent of each axis, outermost first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    pub fn new(dims: &[usize]) -> Self {
        Shape(dims.to_vec())
    }

    /// The axes, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Number of values: the product of the axes (1 for a scalar).
    pub fn len(&self) -> usize {
        self.0.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The four axes of an NCHW shape, or `None` if the rank is not 4.
    pub fn nchw(&self) -> Option<(usize, usize, usize, usize)> {
        match self.0[..] {
            [n, c, h, w] => Some((n, c, h, w)),
            _ => None,
        }
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape::new(d)
    }
}

impl<const R: usize> From<[usize; R]> for Shape {
    fn from(d: [usize; R]) -> Self {
        Shape(d.to_vec())
    }
}

impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(d)
    }
}

impl fmt::Display for Shape {
    /// `(2, 3, 32, 32)`, as PyTorch and NumPy print shapes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() == 1 {
            write!(f, ",")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_len() {
        let s = Shape::from([2, 3, 4, 5]);
        assert_eq!(s.to_string(), "(2, 3, 4, 5)");
        assert_eq!(s.len(), 120);
        assert_eq!(s.nchw(), Some((2, 3, 4, 5)));
        assert_eq!(Shape::from([7]).to_string(), "(7,)");
        assert_eq!(Shape::from([7, 2]).nchw(), None);
    }
}
