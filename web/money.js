// Money as Corral shows it: the rule of addon/money.py, for the viewer (tests/unit/cli/test_money.py
// runs both on the same cases). Two significant digits at least, two decimals at least: $12.35, $0.50,
// $0.012, $0.0000042 (never $0.000000 for a real cost). No known price is "unpriced", never $0.
"use strict";
(function (root) {
  function decimals(v) {
    if (v === 0 || !Number.isFinite(v)) return 2;
    return Math.max(2, 1 - Math.floor(Math.log10(Math.abs(v))));
  }
  function usd(v) {
    if (v === null || v === undefined) return "-";
    const d = decimals(v);
    const text = Math.abs(v).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
    return (v < 0 ? "-" : "") + "$" + text;
  }
  // unpriced: a count of flows without a price (a sum), or true/false (one flow).
  function cost(v, unpriced) {
    const count = Number(unpriced || 0);
    if (v === null || v === undefined || (count && v === 0)) return count ? "unpriced" : "-";
    if (count && typeof unpriced !== "boolean") return `${usd(v)} + ${count} unpriced`;
    return usd(v);
  }
  const Money = { decimals, usd, cost };
  if (typeof module !== "undefined" && module.exports) module.exports = Money;
  else root.Money = Money;
})(typeof window !== "undefined" ? window : globalThis);
