"""The repository service's web catalog: server-rendered pages at `/` beside the API at /api/v1.

pages.py holds the pages and forms, sessions.py the sign-in and the checks forms pass, lineage.py the
lineage graph (SVG drawn here). Every page reads through the same Store, and so the same access rules,
as the API and the CLI; templates/ and static/ ship inside the package (no CDN, no build step).
"""
