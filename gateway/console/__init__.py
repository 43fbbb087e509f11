"""The web console: server-rendered pages (FastAPI + Jinja2) for privacy officers, administrators and the
contact point, under ``/console``.

The console is another face of the same services as the JSON API: every page calls the functions behind
``gateway.auditing``, ``gateway.register`` and ``gateway.escalations`` with a
:class:`~gateway.auth.principal.Principal` built from the signed-in account, so a page shows exactly what the
API would show that person, and nothing is queried twice.

Modules, one job each:

=================  ==========================================================================
``settings``       ``ConsoleSettings`` (env prefix ``WGS_CONSOLE_``): idle timeout, cookie flags
``cookies``        the cookies' names, path and flags: ``__Host-`` cookies when Secure (cookie tossing)
``sessions``       signed session cookie, CSRF tokens, idle and absolute expiry, signing out
``signouts``       the signed-out session ids, in the database (``tables``), for every process
``i18n``           the Dutch/English message catalogue and language choice
``actions``        ``console.action`` audit entries (sign-in, sign-out, exports, subject lookups)
``signins``        failed sign-ins and refused token requests: one entry per account (system) and window,
                   later ones counted and summarised
``signin_windows`` those windows, in the database (``tables``), shared by every process
``views``          page data that is presentation only (bar charts, deadline countdowns)
``pages``          the page machinery: signed-in person, ``Page``, navigation, ``ConsoleRoute``
``endpoints``      the router: thin handlers that check the session and call the services
``escalations``    the escalation queue, case pages and legal-gap register (the escalation service)
``boundary``       what no console route answered (unknown path, wrong method, outage, bug, middleware
                   refusals) still answers as the console: its error page, its security headers
``templates/``     Jinja2 templates; ``static/`` the stylesheet and the in-page proof checker
=================  ==========================================================================
"""
