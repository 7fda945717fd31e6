"""The Telegram console: the trader's commands read over getUpdates and answered in the chat (README, "Telegram")."""
