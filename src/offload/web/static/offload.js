/* offload's pages: live updates on top of pages that read fine without JavaScript.
 * Job output is never parsed as HTML: it becomes text nodes (in spans for ANSI colors). */
(function () {
  "use strict";

  // Lines kept on the page per step; older ones leave it (the plain-text log has them all).
  var MAX_LINES = 10000;
  // An ANSI escape sequence: SGR (colors, bold, reset) is painted, any other is dropped.
  var ESCAPE = /\x1b\[([0-9;]*)([A-Za-z])/g;
  // An escape sequence cut off at the end of an event: kept for the next one.
  var CUT = /\x1b(\[[0-9;]*)?$/;
  // Control characters other than tab and newline show as nothing.
  var CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/g;
  // A carriage return alone (a progress meter redrawing its line) starts a new line here.
  var RETURN = /\r(?!\n)/g;

  function duration(ms) {
    var s = ms / 1000;
    if (s < 1) return Math.round(ms) + " ms";
    if (s < 60) return Math.round(s) + " s";
    var min = Math.floor(s / 60), rest = Math.floor(s % 60);
    if (s < 3600) return rest ? min + " min " + rest + " s" : min + " min";
    return Math.floor(min / 60) + " h " + (min % 60) + " min";
  }

  function Painter() {
    this.color = "";
    this.bold = false;
  }

  Painter.prototype.sgr = function (params) {
    var codes = params === "" ? ["0"] : params.split(";");
    for (var i = 0; i < codes.length; i++) {
      var code = Number(codes[i] || "0");
      if (code === 0) { this.color = ""; this.bold = false; }
      else if (code === 1) this.bold = true;
      else if (code === 22) this.bold = false;
      else if (code === 39) this.color = "";
      else if (code >= 30 && code <= 37) this.color = "ansi-" + (code - 30);
      else if (code >= 90 && code <= 97) this.color = "ansi-bright-" + (code - 90);
    }
  };

  // Paint `text` (no newline in it) into `into`; without `into`, only follow its colors.
  Painter.prototype.paint = function (text, into) {
    var last = 0, match;
    ESCAPE.lastIndex = 0;
    while ((match = ESCAPE.exec(text)) !== null) {
      if (into) this.put(text.slice(last, match.index), into);
      if (match[2] === "m") this.sgr(match[1]);
      last = ESCAPE.lastIndex;
    }
    if (into) this.put(text.slice(last), into);
  };

  Painter.prototype.put = function (text, into) {
    text = text.replace(CONTROL, "");
    if (!text) return;
    if (!this.color && !this.bold) {
      into.appendChild(document.createTextNode(text));
      return;
    }
    var span = document.createElement("span");
    span.className = (this.color + (this.bold ? " ansi-bold" : "")).trim();
    span.textContent = text;
    into.appendChild(span);
  };

  function Step(section, full) {
    this.section = section;
    this.pre = section.querySelector("pre.log");
    this.status = section.querySelector(".step-status");
    this.full = full;
    this.clear();
  }

  Step.prototype.clear = function () {
    this.pre.textContent = "";
    this.painter = new Painter();
    this.carry = "";
    this.open = null;
    this.lines = 0;
  };

  Step.prototype.append = function (text) {
    text = this.carry + text;
    var cut = CUT.exec(text);
    this.carry = cut ? cut[0] : "";
    if (cut) text = text.slice(0, cut.index);
    var parts = text.replace(RETURN, "\n").split("\n");
    // Lines that would leave the page at once are never built, only read for their colors.
    var skip = Math.max(0, parts.length - 1 - MAX_LINES);
    if (skip > 0) {
      for (var s = 0; s < skip; s++) this.painter.paint(parts[s]);
      this.drop(this.lines);
      this.note();
    }
    var fragment = document.createDocumentFragment();
    for (var i = skip; i < parts.length; i++) {
      var last = i === parts.length - 1;
      var line = this.open;
      if (!line) {
        if (last && parts[i] === "") break;
        line = document.createElement("span");
        line.className = "line";
        fragment.appendChild(line);
        this.lines++;
      }
      this.painter.paint(parts[i], line);
      if (last) {
        this.open = line;
      } else {
        line.appendChild(document.createTextNode("\n"));
        this.open = null;
      }
    }
    this.pre.appendChild(fragment);
    if (this.lines > MAX_LINES) {
      this.drop(this.lines - MAX_LINES);
      this.note();
    }
  };

  Step.prototype.drop = function (count) {
    for (var i = 0; i < count && this.pre.firstChild; i++) {
      if (this.pre.firstChild === this.open) this.open = null;
      this.pre.removeChild(this.pre.firstChild);
      this.lines--;
    }
  };

  Step.prototype.note = function () {
    if (this.section.querySelector(".log-note")) return;
    var p = document.createElement("p");
    p.className = "log-note muted";
    p.appendChild(document.createTextNode("Only the last " + MAX_LINES + " lines are shown here: "));
    var a = document.createElement("a");
    a.href = this.full;
    a.textContent = "show the full log";
    p.appendChild(a);
    this.section.insertBefore(p, this.pre);
  };

  Step.prototype.ended = function (exitCode, durationMs) {
    if (exitCode === null || exitCode === undefined) {
      this.status.textContent = "running";
      return;
    }
    var text = "exit " + exitCode;
    if (durationMs !== null && durationMs !== undefined) text += " · " + duration(durationMs);
    this.status.textContent = text;
  };

  function newSection(entry, key) {
    var section = document.createElement("section");
    section.className = "step";
    section.setAttribute("data-entry", String(entry));
    section.setAttribute("aria-label", "Step " + key);
    var h3 = document.createElement("h3");
    var code = document.createElement("code");
    code.textContent = key;
    var status = document.createElement("span");
    status.className = "muted step-status";
    status.textContent = "running";
    h3.appendChild(code);
    h3.appendChild(document.createTextNode(" "));
    h3.appendChild(status);
    var pre = document.createElement("pre");
    pre.className = "log";
    pre.tabIndex = 0;
    section.appendChild(h3);
    section.appendChild(pre);
    return section;
  }

  function LiveLog(root) {
    var self = this;
    this.root = root;
    this.full = root.getAttribute("data-full");
    this.steps = {};
    var sections = root.querySelectorAll("section.step[data-entry]");
    for (var i = 0; i < sections.length; i++) {
      // The page's text of the log so far, painted: read before the step clears it.
      var text = sections[i].querySelector("pre.log").textContent;
      var step = new Step(sections[i], this.full);
      step.append(text);
      this.steps[sections[i].getAttribute("data-entry")] = step;
    }
    this.button = document.getElementById("follow");
    this.status = document.getElementById("live-status");
    if (root.getAttribute("data-live") !== "true" || !window.EventSource) return;
    this.following = true;
    if (this.button) {
      this.button.hidden = false;
      this.button.addEventListener("click", function () {
        self.follow(!self.following);
        if (self.following) self.scroll(self.last);
      });
    }
    this.watchScrolling();
    var source = new EventSource(root.getAttribute("data-events"));
    source.addEventListener("log", function (e) { self.log(JSON.parse(e.data)); });
    source.addEventListener("state", function (e) { self.state(JSON.parse(e.data).state); });
    source.addEventListener("end", function (e) {
      source.close();
      var state = JSON.parse(e.data).state;
      if (state) self.state(state);
      self.say(state ? "The job has finished." : "The job is gone.");
      self.follow(false);
      if (self.button) self.button.hidden = true;
    });
    source.addEventListener("open", function () { self.say(""); });
    source.addEventListener("error", function () {
      self.say(source.readyState === EventSource.CLOSED
        ? "The live log stopped; reload the page to see more."
        : "Reconnecting to the live log…");
    });
  }

  LiveLog.prototype.say = function (text) {
    if (this.status) this.status.textContent = text;
  };

  LiveLog.prototype.log = function (data) {
    var step = this.steps[data.entry];
    if (!step) {
      var empty = document.getElementById("log-empty");
      if (empty) empty.parentNode.removeChild(empty);
      var section = newSection(data.entry, data.key);
      this.root.appendChild(section);
      step = this.steps[data.entry] = new Step(section, this.full);
    }
    if (data.reset) step.clear();
    if (data.text) step.append(data.text);
    step.ended(data.exitCode, data.durationMs);
    this.last = step;
    if (this.following) this.scroll(step);
  };

  LiveLog.prototype.state = function (state) {
    var badge = document.querySelector("#job-state .state");
    if (badge) {
      badge.textContent = state;
      badge.className = "state state-" + state;
    }
    var forms = document.querySelectorAll("form[data-when]");
    for (var i = 0; i < forms.length; i++) {
      forms[i].hidden = forms[i].getAttribute("data-when").split(" ").indexOf(state) < 0;
    }
  };

  LiveLog.prototype.follow = function (on) {
    this.following = on;
    if (this.button) this.button.setAttribute("aria-pressed", on ? "true" : "false");
  };

  LiveLog.prototype.scroll = function (step) {
    if (!step) return;
    step.pre.scrollTop = step.pre.scrollHeight;
    window.scrollTo(0, document.documentElement.scrollHeight);
  };

  // Follow mode ends when the reader moves up: the page stops pulling them to the bottom.
  LiveLog.prototype.watchScrolling = function () {
    var self = this, touchY = null;
    var stop = function () { if (self.following) self.follow(false); };
    document.addEventListener("wheel", function (e) { if (e.deltaY < 0) stop(); }, { passive: true });
    document.addEventListener("keydown", function (e) {
      if (e.key === "PageUp" || e.key === "ArrowUp" || e.key === "Home") stop();
    });
    document.addEventListener("touchstart", function (e) {
      touchY = e.touches.length ? e.touches[0].clientY : null;
    }, { passive: true });
    document.addEventListener("touchmove", function (e) {
      if (touchY !== null && e.touches.length && e.touches[0].clientY > touchY + 10) stop();
    }, { passive: true });
  };

  // A button[data-copy] copies the value (or text) of the element its attribute names, and
  // says so in the element named by data-copied. Hidden until the clipboard is there to use.
  function copyButtons() {
    if (!navigator.clipboard || !window.isSecureContext) return;
    var buttons = document.querySelectorAll("button[data-copy]");
    for (var i = 0; i < buttons.length; i++) {
      (function (button) {
        var source = document.getElementById(button.getAttribute("data-copy"));
        var status = document.getElementById(button.getAttribute("data-copied") || "");
        if (!source) return;
        var say = function (text) { if (status) status.textContent = text; };
        button.hidden = false;
        button.addEventListener("click", function () {
          var text = "value" in source ? source.value : source.textContent;
          navigator.clipboard.writeText(text).then(
            function () { say("Copied."); },
            function () {
              if (source.select) source.select();
              say("The browser refused to copy: it is selected, copy it with the keyboard.");
            }
          );
        });
      })(buttons[i]);
    }
  }

  // A form[data-confirm] does what cannot be undone only once the reader confirms it.
  function confirmForms() {
    document.addEventListener("submit", function (e) {
      var message = e.target.getAttribute && e.target.getAttribute("data-confirm");
      if (message && !window.confirm(message)) e.preventDefault();
    });
  }

  // The batch spec editor: line numbers beside its text, and the checker's "line L, column C"
  // links, which put the cursor at that place of the text.
  function specEditor() {
    var area = document.getElementById("spec");
    var gutter = document.getElementById("spec-lines");
    if (!area || !gutter) return;
    var shown = 0;
    var follow = function () { gutter.scrollTop = area.scrollTop; };
    var number = function () {
      var lines = area.value.split("\n").length;
      if (lines !== shown) {
        var numbers = [];
        for (var i = 1; i <= lines; i++) numbers.push(i);
        // A last empty line: the text area scrolls a little past its last line too.
        gutter.textContent = numbers.join("\n") + "\n\n";
        shown = lines;
      }
      follow();
    };
    gutter.hidden = false;
    area.addEventListener("input", number);
    area.addEventListener("scroll", follow);
    number();
    document.addEventListener("click", function (e) {
      var link = e.target.closest ? e.target.closest("a[data-line]") : null;
      if (!link) return;
      e.preventDefault();
      var lines = area.value.split("\n");
      var line = Math.min(Math.max(Number(link.getAttribute("data-line")), 1), lines.length);
      var offset = 0;
      for (var n = 0; n < line - 1; n++) offset += lines[n].length + 1;
      // Columns count characters, the text area UTF-16 units: count what comes before.
      var before = Array.from(lines[line - 1]).slice(0, Number(link.getAttribute("data-column")) - 1);
      offset += before.join("").length;
      area.focus();
      area.setSelectionRange(offset, offset);
      var height = parseFloat(window.getComputedStyle(area).lineHeight) || 20;
      area.scrollTop = Math.max(0, (line - 1) * height - area.clientHeight / 3);
      follow();
    });
  }

  function start() {
    copyButtons();
    confirmForms();
    specEditor();
    var root = document.getElementById("log");
    if (root) new LiveLog(root);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
