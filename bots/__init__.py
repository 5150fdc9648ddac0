"""aiogram 3 bots (client, support, admin): thin presentation over controller services.

They arrive in later issues; see DESIGN.md, "Bots".
"""
