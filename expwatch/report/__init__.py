"""The HTML report: gathered from the audit trail, rendered to one self-contained page."""
