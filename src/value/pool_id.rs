//! A pool's identity: product, kind and term, written `PRODUCT-KIND-TERM`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// Which Katalon product a pool licenses.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Product {
    /// Katalon Runtime Engine: CI runners.
    Kre,
    /// Katalon Studio Enterprise: people.
    Kse,
}

/// How licenses of a pool bind to machines.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Kind {
    /// Any machine, up to the quota at a time.
    Floating,
    /// Bound to a machine ID.
    NodeLocked,
}

/// The subscription term of a pool.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Term {
    /// Yearly subscription.
    Annual,
    /// Monthly subscription.
    Monthly,
}

/// A pool's identity within its org, written `PRODUCT-KIND-TERM`
/// (e.g. `kre-floating-annual`). At most one pool per id per org.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct PoolId {
    /// The product licensed.
    pub product: Product,
    /// Node-locked or floating.
    pub kind: Kind,
    /// Annual or monthly.
    pub term: Term,
}

impl PoolId {
    /// `KSE` or `KRE`, as license file names spell it.
    pub fn product_name(&self) -> &'static str {
        match self.product {
            Product::Kse => "KSE",
            Product::Kre => "KRE",
        }
    }

    /// Whether the pool issues offline licenses: annual node-locked ones
    /// only (the vendor's rule).
    pub fn issues_offline(&self) -> bool {
        self.kind == Kind::NodeLocked && self.term == Term::Annual
    }

    /// The pool KRE runners use unless told otherwise.
    pub const KRE_DEFAULT: PoolId = PoolId { product: Product::Kre, kind: Kind::Floating, term: Term::Annual };
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let product = match self.product {
            Product::Kre => "kre",
            Product::Kse => "kse",
        };
        let kind = match self.kind {
            Kind::Floating => "floating",
            Kind::NodeLocked => "node-locked",
        };
        let term = match self.term {
            Term::Annual => "annual",
            Term::Monthly => "monthly",
        };
        write!(f, "{product}-{kind}-{term}")
    }
}

impl FromStr for PoolId {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<PoolId, Invalid> {
        let bad = || Invalid::new("pool", format!("{s:?}: expected PRODUCT-KIND-TERM, e.g. kre-floating-annual"));
        let (product, rest) = s.split_once('-').ok_or_else(bad)?;
        let (kind, term) = rest.rsplit_once('-').ok_or_else(bad)?;
        Ok(PoolId { product: product.parse()?, kind: kind.parse()?, term: term.parse()? })
    }
}

impl FromStr for Product {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Product, Invalid> {
        match s {
            "kre" => Ok(Product::Kre),
            "kse" => Ok(Product::Kse),
            _ => Err(Invalid::new("product", format!("{s:?}: expected kre or kse"))),
        }
    }
}

impl FromStr for Kind {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Kind, Invalid> {
        match s {
            "floating" => Ok(Kind::Floating),
            "node-locked" => Ok(Kind::NodeLocked),
            _ => Err(Invalid::new("kind", format!("{s:?}: expected floating or node-locked"))),
        }
    }
}

impl FromStr for Term {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Term, Invalid> {
        match s {
            "annual" => Ok(Term::Annual),
            "monthly" => Ok(Term::Monthly),
            _ => Err(Invalid::new("term", format!("{s:?}: expected annual or monthly"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids_round_trip() {
        for s in ["kre-floating-annual", "kse-node-locked-monthly", "kre-node-locked-annual"] {
            assert_eq!(s.parse::<PoolId>().unwrap().to_string(), s);
        }
        assert!("kre".parse::<PoolId>().is_err());
        assert!("kre-floating-weekly".parse::<PoolId>().is_err());
    }
}
