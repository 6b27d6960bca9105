"""Streamlit helpers the pages share; not pages themselves (app.py's router lists the pages)."""
