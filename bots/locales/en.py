"""English texts of the bots."""

TEXTS: dict[str, str] = {
    # common
    "common.back": "« Back",
    "common.cancel": "Cancel",
    "common.yes": "Yes",
    "common.no": "No",
    "common.on": "on",
    "common.off": "off",
    "unit.b": "B",
    "unit.kib": "KiB",
    "unit.mib": "MiB",
    "unit.gib": "GiB",
    "unit.tib": "TiB",
    # menu and start
    "menu.title": "Main menu. What would you like to do?",
    "menu.title_button": "🏠 Main menu",
    "menu.plans": "💳 Buy or renew",
    "menu.subscriptions": "📦 My subscription",
    "menu.devices": "📱 My devices",
    "menu.trial": "🎁 Free trial",
    "menu.servers": "🌍 Servers",
    "menu.profile": "👤 Profile",
    "menu.support": "💬 Support",
    "menu.unknown": "I did not get that. Choose an action from the menu:",
    "start.welcome": "Welcome back, {name}! What would you like to do?",
    "start.welcome_new": (
        "Hi, {name}! This VPN keeps working where others get blocked.\n\n"
        "Choose a plan, pay with Telegram Stars, and connect a device in a minute."
    ),
    "start.referred": "A friend invited you — thanks for coming through their link!",
    "help.text": (
        "<b>How it works</b>\n"
        "1. “Buy or renew” — choose a plan and pay.\n"
        "2. “My devices” — connect a device: the bot sends a file or a link and a QR code.\n"
        "3. Import them into the app and switch the VPN on.\n\n"
        "If something does not work, write to “Support”."
    ),
    # plans
    "plans.title": "Choose a plan:",
    "plans.none": "No plans are on sale right now. Please check back later.",
    "plan.terms": "{days} days · devices: {devices} · traffic: {traffic}",
    "plan.traffic_unlimited": "unlimited",
    "plan.traffic_gb": "{gb} GiB",
    "plan.price": "Price: <b>{price}</b>",
    "plan.price_stars": "To pay in Stars: <b>{stars} ⭐</b>",
    "plan.pay_stars": "⭐ Pay with Stars",
    "plan.promo": "🎟 I have a promo code",
    "plan.no_payment_method": "This plan cannot be paid for right now.",
    # subscriptions
    "subscription.title": "<b>Your subscriptions</b>",
    "subscription.none": "You have no subscription yet.",
    "subscription.no_plan": "Subscription",
    "subscription.line": "#{id} {name} — {status}, until {until}",
    "subscription.details": (
        "<b>Subscription #{id}</b> · {name}\n"
        "Status: {status}\n"
        "Valid until: {until}\n"
        "Traffic: {used} of {limit}\n"
        "Devices: {devices} of {device_limit}\n"
        "Auto-renewal: {auto}"
    ),
    "subscription.renew": "🔄 Renew",
    "subscription.auto_on": "Turn auto-renewal on",
    "subscription.auto_off": "Turn auto-renewal off",
    "subscription.renew_choose_plan": "Choose a plan under “Buy or renew”.",
    "status.pending": "awaiting payment",
    "status.active": "active ✅",
    "status.expired": "expired",
    "status.suspended": "suspended",
    "status.suspended.admin": "suspended by an administrator",
    "status.suspended.traffic_limit": "traffic used up",
    "status.suspended.banned": "blocked",
    "status.suspended.payment": "awaiting payment",
    # payments
    "payment.invoice": "VPN: {terms}",
    "payment.invoice_renewal": "Renewal of subscription #{id}: {terms}",
    "payment.promo_prompt": "Send the promo code in one message — the invoice will come discounted.",
    "payment.busy": "The service is busy, please try paying again in a minute.",
    "payment.unmatched": (
        "We could not match this payment to your invoice. Please write to support — we will sort "
        "it out."
    ),
    "payment.unmatched_refunded": (
        "We could not match this payment to your invoice, so the Stars have been refunded."
    ),
    "payment.processing": (
        "Payment received, but we could not record it right now — we will retry on our own. "
        "Please do not pay again. If your subscription is not active within a few minutes, "
        "write to support and give the code <code>{code}</code>."
    ),
    "payment.reconciled": "We found your payment and recorded it: your subscription is valid until {until}. Thank you!",
    "payment.already_counted": "This payment has already been counted — all is well.",
    "payment.done": (
        "Payment received, thank you! ✅\n"
        "Subscription #{id} is extended by {days} days and is valid until {until}.\n\n"
        "Now connect a device:"
    ),
    # devices and configs
    "devices.connect": "➕ Connect a device",
    "devices.no_subscription": "To connect a device you need an active subscription.",
    "devices.title": "<b>Your devices</b> ({used} of {limit})",
    "devices.line": "• {name} — {protocol}, {flag} {server}",
    "devices.limit_reached": "Your plan's device limit is reached. Delete one to add another.",
    "devices.choose_protocol": (
        "Choose a protocol. Not sure? Take “Automatic”: where VPNs are blocked, VLESS-Reality "
        "works best."
    ),
    "devices.choose_platform": "Which device will you use the VPN on?",
    "devices.preparing": "Preparing your configuration…",
    "devices.details": "{line}",
    "devices.get": "📥 Get the configuration",
    "devices.rotate": "🔑 Change keys",
    "devices.delete": "🗑 Delete the device",
    "devices.rotate_confirm": (
        "Change this device's keys?\n{line}\n\nThe old configuration will stop working."
    ),
    "devices.delete_confirm": "Delete this device?\n{line}\n\nIts configuration will stop working.",
    "devices.rotated": "Keys changed. The new configuration is below.",
    "devices.deleted": "Device deleted.",
    "protocol.auto": "✨ Automatic",
    "protocol.vless": "VLESS-Reality",
    "protocol.wireguard": "WireGuard",
    "protocol.openvpn": "OpenVPN",
    "protocol.ikev2": "IKEv2",
    "config.vless": (
        "<b>{name}</b>: your VLESS-Reality link. Copy it and import it into {app}:\n\n"
        "<code>{link}</code>"
    ),
    "config.wireguard": "<b>{name}</b>: your WireGuard file. Import it into {app} or scan the QR code.",
    "config.openvpn": "<b>{name}</b>: your OpenVPN profile. Open it in {app}.",
    "config.qr_caption": "QR code for {name}",
    "apps.vless.any": "v2rayNG, Hiddify, Streisand or v2rayN",
    "apps.vless.android": "v2rayNG or Hiddify (Google Play)",
    "apps.vless.ios": "Streisand or V2Box (App Store)",
    "apps.vless.windows": "v2rayN or Hiddify",
    "apps.vless.macos": "Hiddify or V2Box",
    "apps.vless.linux": "Hiddify or sing-box",
    "apps.vless.router": "a router firmware with Xray or sing-box",
    "apps.wireguard.any": "the WireGuard app",
    "apps.wireguard.android": "WireGuard (Google Play)",
    "apps.wireguard.ios": "WireGuard (App Store)",
    "apps.wireguard.windows": "WireGuard for Windows",
    "apps.wireguard.macos": "WireGuard (Mac App Store)",
    "apps.wireguard.linux": "wg-quick or NetworkManager",
    "apps.wireguard.router": "your router's WireGuard settings",
    "apps.openvpn.any": "OpenVPN Connect",
    "apps.openvpn.android": "OpenVPN Connect (Google Play)",
    "apps.openvpn.ios": "OpenVPN Connect (App Store)",
    "apps.openvpn.windows": "OpenVPN Connect or OpenVPN GUI",
    "apps.openvpn.macos": "OpenVPN Connect or Tunnelblick",
    "apps.openvpn.linux": "openvpn or NetworkManager",
    "apps.openvpn.router": "your router's OpenVPN client",
    # servers
    "servers.title": "<b>Servers</b>",
    "servers.none": "No servers are connected yet.",
    "servers.line": "{flag} {place} — load {load}%, {status}{mark}",
    "servers.status_up": "up",
    "servers.status_down": "unavailable",
    "servers.auto": "Automatic",
    "servers.hint": "\nChoose a preferred location for new devices:",
    # profile
    "profile.text": (
        "<b>Profile</b>\n"
        "Telegram ID: <code>{id}</code>\n"
        "Language: {language}\n"
        "Preferred protocol: {protocol}\n"
        "Pick the protocol automatically where blocked: {auto}"
    ),
    "profile.language": "🌐 Язык / Language",
    "profile.protocol": "🔧 Preferred protocol",
    "profile.auto_on": "Turn automatic protocol choice on",
    "profile.auto_off": "Turn automatic protocol choice off",
    "profile.referral": "🤝 Invite a friend",
    "profile.promo": "🎟 Enter a promo code",
    "profile.choose_language": "Choose a language:",
    "profile.choose_protocol": "Which protocol should we offer first?",
    "referral.text": (
        "<b>Invite friends</b>\n"
        "Your link: {link}\n\n"
        "Invited: {invited}, of them paid: {paid}.\n"
        "Bonus days earned: {days}."
    ),
    "trial.started": "Your trial has started and is valid until {until}. Connect a device:",
    "promo.prompt": "Send the promo code in one message.",
    "promo.redeemed": "Promo code applied: +{days} days. Your subscription is valid until {until}.",
    # support
    "support.title": "<b>Support</b>\nAsk a question — we answer right here.",
    "support.new": "✉️ New request",
    "support.line": "#{id} {subject} — {status}",
    "support.details": "<b>Request #{id}</b>: {subject}\nStatus: {status}\nCreated: {created}\n\n{text}",
    "support.prompt": "Describe the problem in one message: what does not work, on which device.",
    "support.opened": "Request #{id} is open. We will answer in this chat.",
    "support.text_only": "Please describe the problem in text.",
    "ticket.open": "open",
    "ticket.in_progress": "in progress",
    "ticket.waiting_client": "waiting for your reply",
    "ticket.closed": "closed",
    # errors (keys follow controller.domain.errors codes)
    "error.internal": "Something went wrong. Please try again a little later.",
    "error.stale_button": "This button is outdated. Open the menu again: /menu",
    "error.domain_error": "That did not work.",
    "error.not_found": "Not found.",
    "error.user_not_found": "Please send /start first.",
    "error.plan_not_found": "There is no such plan.",
    "error.subscription_not_found": "Subscription not found.",
    "error.promo_not_found": "There is no such promo code.",
    "error.node_not_found": "This server is not available now.",
    "error.config_not_found": "Device not found.",
    "error.payment_not_found": "Invoice not found. Please create a new one.",
    "error.ticket_not_found": "Request not found.",
    "error.invalid_input": "Please check what you entered.",
    "error.conflict": "This cannot be done right now.",
    "error.already_exists": "That already exists.",
    "error.invalid_state": "This cannot be done with the subscription right now.",
    "error.promo_already_used": "You have already used this promo code.",
    "error.trial_used": "The trial has already been used.",
    "error.payment_mismatch": "The payment does not match the invoice. Please create a new invoice.",
    "error.forbidden": "This is not available to you.",
    "error.user_banned": "Your access to the service is closed. If this is a mistake, contact support.",
    "error.enrollment_refused": "Refused.",
    "error.limit_reached": "The limit is reached.",
    "error.promo_exhausted": "This promo code has been used up.",
    "error.unavailable": "This is not available right now.",
    "error.plan_inactive": "This plan is no longer on sale. Please choose another.",
    "error.promo_inactive": "This promo code is not valid now.",
    "error.no_active_subscription": "You need an active subscription.",
    "error.no_server_available": "No server has room for this protocol now. Please try another.",
    "error.trial_unavailable": "No trial is offered right now.",
    "error.payment_provider_unavailable": "This payment method is not available right now.",
}
