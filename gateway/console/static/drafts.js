// Keeps what a person types into the console's long forms (a decision's motivation, a comment, a legal gap,
// a gap's note) in this tab's sessionStorage, so that a form sent after the session went idle is filled in
// again once they have signed in: the server refuses that POST without acting on it and sends them to the
// sign-in form, and the text used to be lost with it.
//
// What is kept, and for how long: the text fields of forms marked `data-draft`, keyed by the form's action
// (one case's decision form is not another's), in this tab only (sessionStorage: gone when the tab closes,
// never sent to the server, never in a log). A draft is dropped when its form was sent and the page that
// followed says it was done (the console's `#done` notice, shown only after a successful POST of this
// session), when the person signs out, and when someone else signs in in this tab.
"use strict";
(function () {
  const STORE = "wgs-console-drafts";
  const main = document.getElementById("main");
  const me = main ? main.dataset.person || "" : "";  // empty on the sign-in form and for nobody signed in

  const load = () => {
    try {
      const found = JSON.parse(sessionStorage.getItem(STORE) || "{}");
      return found && typeof found === "object" && found.forms ? found : { owner: "", forms: {}, sent: "" };
    } catch (e) {
      return { owner: "", forms: {}, sent: "" };
    }
  };
  const save = (state) => {
    try { sessionStorage.setItem(STORE, JSON.stringify(state)); } catch (e) { /* storage off or full */ }
  };
  const fields = (form) => Array.from(form.querySelectorAll("textarea[name], input[name]"))
    .filter((field) => field.tagName === "TEXTAREA" || field.type === "text");

  let state = load();
  if (me) {
    if (state.owner && state.owner !== me) state = { owner: me, forms: {}, sent: "" };  // another person
    state.owner = me;
    // The page after a form was sent: done, so its draft goes; anything else (refused, an error page) keeps it.
    if (state.sent && document.getElementById("done")) delete state.forms[state.sent];
    state.sent = "";
    save(state);
  }

  document.querySelectorAll("form[data-draft]").forEach((form) => {
    const key = form.getAttribute("action") || "";
    const kept = state.forms[key] || {};
    let restored = false;
    fields(form).forEach((field) => {
      const text = kept[field.name];
      if (typeof text === "string" && text && !field.value) {
        field.value = text;
        restored = true;
      }
    });
    if (restored && form.dataset.draftRestored) {
      const notice = document.createElement("p");
      notice.className = "notice";
      notice.setAttribute("role", "status");
      notice.dataset.draftNotice = "";
      notice.textContent = form.dataset.draftRestored;
      form.insertBefore(notice, form.firstChild);
    }
    form.addEventListener("input", () => {
      const typed = {};
      fields(form).forEach((field) => { if (field.value) typed[field.name] = field.value; });
      const current = load();
      current.owner = me || current.owner;
      if (Object.keys(typed).length) current.forms[key] = typed; else delete current.forms[key];
      save(current);
    });
    form.addEventListener("submit", () => {
      const current = load();
      current.sent = key;
      save(current);
    });
  });

  // Signing out forgets every draft: the next person at this workstation finds none of them.
  document.querySelectorAll("form[action='/console/logout']").forEach((form) => {
    form.addEventListener("submit", () => { try { sessionStorage.removeItem(STORE); } catch (e) { /* off */ } });
  });
})();
