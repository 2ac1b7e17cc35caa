// MathJax settings for pymdownx.arithmatex (generic mode), as Material for MkDocs recommends.
// MathJax itself is served by the site (docs/_ext/offline.py copies it there) and finds
// its fonts and extensions next to its script: name no other host here.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

document$.subscribe(() => {
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
