// The widget manager (@jupyter-widgets/html-manager 1.x) typesets widget labels with MathJax 2's
// `MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])`; the book loads MathJax 3, which has no
// Hub, so every widget would throw. Give MathJax 3 that one call. MathJax (a deferred script) is
// loaded by DOMContentLoaded; the widgets are drawn later, on `load`.
document.addEventListener("DOMContentLoaded", function () {
  var mj = window.MathJax;
  if (!mj || mj.Hub || !mj.startup || !mj.startup.promise) return;
  mj.Hub = {
    Queue: function (command) {
      var element = Array.isArray(command) ? command[2] : undefined;
      mj.startup.promise
        .then(function () { return mj.typesetPromise(element ? [element] : undefined); })
        .catch(function (error) { console.warn("MathJax could not typeset a widget:", error); });
    },
  };
});
