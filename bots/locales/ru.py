"""Русские тексты ботов (язык по умолчанию)."""

TEXTS: dict[str, str] = {
    # common
    "common.back": "« Назад",
    "common.cancel": "Отмена",
    "common.yes": "Да",
    "common.no": "Нет",
    "common.on": "включено",
    "common.off": "выключено",
    "unit.b": "Б",
    "unit.kib": "КиБ",
    "unit.mib": "МиБ",
    "unit.gib": "ГиБ",
    "unit.tib": "ТиБ",
    # menu and start
    "menu.title": "Главное меню. Что сделаем?",
    "menu.title_button": "🏠 Главное меню",
    "menu.plans": "💳 Купить или продлить",
    "menu.subscriptions": "📦 Моя подписка",
    "menu.devices": "📱 Мои устройства",
    "menu.trial": "🎁 Бесплатный пробный период",
    "menu.servers": "🌍 Серверы",
    "menu.profile": "👤 Профиль",
    "menu.support": "💬 Поддержка",
    "menu.unknown": "Не понял сообщение. Выберите действие в меню:",
    "start.welcome": "С возвращением, {name}! Что сделаем?",
    "start.welcome_new": (
        "Привет, {name}! Это VPN, который работает и там, где другие блокируют.\n\n"
        "Выберите тариф, оплатите звёздами Telegram — и подключите устройство за минуту."
    ),
    "start.referred": "Вас пригласил друг — спасибо, что пришли по его ссылке!",
    "help.text": (
        "<b>Как пользоваться</b>\n"
        "1. «Купить или продлить» — выберите тариф и оплатите.\n"
        "2. «Мои устройства» — подключите устройство: бот пришлёт файл или ссылку и QR-код.\n"
        "3. Импортируйте их в приложение и включите VPN.\n\n"
        "Если что-то не работает — напишите в «Поддержку»."
    ),
    # plans
    "plans.title": "Выберите тариф:",
    "plans.none": "Сейчас нет тарифов в продаже. Загляните позже.",
    "plan.terms": "{days} дн. · устройств: {devices} · трафик: {traffic}",
    "plan.traffic_unlimited": "без ограничений",
    "plan.traffic_gb": "{gb} ГиБ",
    "plan.price": "Цена: <b>{price}</b>",
    "plan.price_stars": "К оплате звёздами: <b>{stars} ⭐</b>",
    "plan.pay_stars": "⭐ Оплатить звёздами",
    "plan.promo": "🎟 У меня есть промокод",
    "plan.no_payment_method": "Оплата этого тарифа сейчас недоступна.",
    # subscriptions
    "subscription.title": "<b>Ваши подписки</b>",
    "subscription.none": "У вас пока нет подписки.",
    "subscription.no_plan": "Подписка",
    "subscription.line": "#{id} {name} — {status}, до {until}",
    "subscription.details": (
        "<b>Подписка #{id}</b> · {name}\n"
        "Статус: {status}\n"
        "Действует до: {until}\n"
        "Трафик: {used} из {limit}\n"
        "Устройства: {devices} из {device_limit}\n"
        "Автопродление: {auto}"
    ),
    "subscription.renew": "🔄 Продлить",
    "subscription.auto_on": "Включить автопродление",
    "subscription.auto_off": "Выключить автопродление",
    "subscription.renew_choose_plan": "Выберите тариф в разделе «Купить или продлить».",
    "status.pending": "ожидает оплаты",
    "status.active": "активна ✅",
    "status.expired": "истекла",
    "status.suspended": "приостановлена",
    "status.suspended.admin": "приостановлена администратором",
    "status.suspended.traffic_limit": "трафик исчерпан",
    "status.suspended.banned": "заблокирована",
    "status.suspended.payment": "ожидает оплаты",
    # payments
    "payment.invoice": "VPN: {terms}",
    "payment.invoice_renewal": "Продление подписки #{id}: {terms}",
    "payment.promo_prompt": "Пришлите промокод одним сообщением — счёт придёт уже со скидкой.",
    "payment.busy": "Сервис занят, попробуйте оплатить ещё раз через минуту.",
    "payment.unmatched": (
        "Не удалось сопоставить этот платёж с вашим счётом. Напишите в поддержку — разберёмся."
    ),
    "payment.unmatched_refunded": (
        "Не удалось сопоставить этот платёж с вашим счётом, поэтому звёзды возвращены."
    ),
    "payment.processing": (
        "Оплата получена, но записать её прямо сейчас не удалось — мы повторим сами. "
        "Не оплачивайте ещё раз. Если подписка не заработает в течение нескольких минут, "
        "напишите в поддержку и укажите код <code>{code}</code>."
    ),
    "payment.reconciled": "Мы нашли вашу оплату и записали её: подписка действует до {until}. Спасибо!",
    "payment.already_counted": "Этот платёж уже учтён — всё в порядке.",
    "payment.done": (
        "Оплата получена, спасибо! ✅\n"
        "Подписка #{id} продлена на {days} дн. и действует до {until}.\n\n"
        "Теперь подключите устройство:"
    ),
    # devices and configs
    "devices.connect": "➕ Подключить устройство",
    "devices.no_subscription": "Чтобы подключить устройство, нужна активная подписка.",
    "devices.title": "<b>Ваши устройства</b> ({used} из {limit})",
    "devices.line": "• {name} — {protocol}, {flag} {server}",
    "devices.limit_reached": "Достигнут лимит устройств тарифа. Удалите одно, чтобы добавить новое.",
    "devices.choose_protocol": (
        "Выберите протокол. Если не знаете, что выбрать, — «Автовыбор»: "
        "там, где блокируют VPN, лучше всего работает VLESS-Reality."
    ),
    "devices.choose_platform": "На каком устройстве будете пользоваться VPN?",
    "devices.preparing": "Готовлю конфигурацию…",
    "devices.details": "{line}",
    "devices.get": "📥 Получить конфигурацию",
    "devices.rotate": "🔑 Сменить ключи",
    "devices.delete": "🗑 Удалить устройство",
    "devices.rotate_confirm": (
        "Сменить ключи для устройства?\n{line}\n\nСтарая конфигурация перестанет работать."
    ),
    "devices.delete_confirm": "Удалить устройство?\n{line}\n\nЕго конфигурация перестанет работать.",
    "devices.rotated": "Ключи сменены. Новая конфигурация — ниже.",
    "devices.deleted": "Устройство удалено.",
    "protocol.auto": "✨ Автовыбор",
    "protocol.vless": "VLESS-Reality",
    "protocol.wireguard": "WireGuard",
    "protocol.openvpn": "OpenVPN",
    "protocol.ikev2": "IKEv2",
    "config.vless": (
        "<b>{name}</b>: ваша ссылка VLESS-Reality. Скопируйте её и импортируйте в {app}:\n\n"
        "<code>{link}</code>"
    ),
    "config.wireguard": "<b>{name}</b>: файл WireGuard. Импортируйте его в {app} или отсканируйте QR-код.",
    "config.openvpn": "<b>{name}</b>: профиль OpenVPN. Откройте его в {app}.",
    "config.qr_caption": "QR-код для устройства {name}",
    "apps.vless.any": "приложение v2rayNG, Hiddify, Streisand или v2rayN",
    "apps.vless.android": "v2rayNG или Hiddify (Google Play)",
    "apps.vless.ios": "Streisand или V2Box (App Store)",
    "apps.vless.windows": "v2rayN или Hiddify",
    "apps.vless.macos": "Hiddify или V2Box",
    "apps.vless.linux": "Hiddify или sing-box",
    "apps.vless.router": "прошивку с Xray или sing-box",
    "apps.wireguard.any": "приложение WireGuard",
    "apps.wireguard.android": "WireGuard (Google Play)",
    "apps.wireguard.ios": "WireGuard (App Store)",
    "apps.wireguard.windows": "WireGuard для Windows",
    "apps.wireguard.macos": "WireGuard (Mac App Store)",
    "apps.wireguard.linux": "wg-quick или NetworkManager",
    "apps.wireguard.router": "настройки WireGuard роутера",
    "apps.openvpn.any": "OpenVPN Connect",
    "apps.openvpn.android": "OpenVPN Connect (Google Play)",
    "apps.openvpn.ios": "OpenVPN Connect (App Store)",
    "apps.openvpn.windows": "OpenVPN Connect или OpenVPN GUI",
    "apps.openvpn.macos": "OpenVPN Connect или Tunnelblick",
    "apps.openvpn.linux": "openvpn или NetworkManager",
    "apps.openvpn.router": "клиент OpenVPN роутера",
    # servers
    "servers.title": "<b>Серверы</b>",
    "servers.none": "Серверы ещё не подключены.",
    "servers.line": "{flag} {place} — загрузка {load}%, {status}{mark}",
    "servers.status_up": "работает",
    "servers.status_down": "недоступен",
    "servers.auto": "Автовыбор",
    "servers.hint": "\nВыберите предпочтительную локацию для новых устройств:",
    # profile
    "profile.text": (
        "<b>Профиль</b>\n"
        "Telegram ID: <code>{id}</code>\n"
        "Язык: {language}\n"
        "Предпочитаемый протокол: {protocol}\n"
        "Автовыбор протокола при блокировках: {auto}"
    ),
    "profile.language": "🌐 Язык / Language",
    "profile.protocol": "🔧 Предпочитаемый протокол",
    "profile.auto_on": "Включить автовыбор протокола",
    "profile.auto_off": "Выключить автовыбор протокола",
    "profile.referral": "🤝 Пригласить друга",
    "profile.promo": "🎟 Ввести промокод",
    "profile.choose_language": "Выберите язык:",
    "profile.choose_protocol": "Какой протокол предлагать в первую очередь?",
    "referral.text": (
        "<b>Приглашайте друзей</b>\n"
        "Ваша ссылка: {link}\n\n"
        "Приглашено: {invited}, из них оплатили: {paid}.\n"
        "Получено бонусных дней: {days}."
    ),
    "trial.started": "Пробный период начался и действует до {until}. Подключите устройство:",
    "promo.prompt": "Пришлите промокод одним сообщением.",
    "promo.redeemed": "Промокод применён: +{days} дн. Подписка действует до {until}.",
    # support
    "support.title": "<b>Поддержка</b>\nЗадайте вопрос — ответим здесь же.",
    "support.new": "✉️ Новое обращение",
    "support.line": "#{id} {subject} — {status}",
    "support.details": "<b>Обращение #{id}</b>: {subject}\nСтатус: {status}\nСоздано: {created}\n\n{text}",
    "support.prompt": "Опишите проблему одним сообщением: что не работает, на каком устройстве.",
    "support.opened": "Обращение #{id} создано. Мы ответим в этом чате.",
    "support.text_only": "Пожалуйста, опишите проблему текстом.",
    "ticket.open": "открыто",
    "ticket.in_progress": "в работе",
    "ticket.waiting_client": "ждёт вашего ответа",
    "ticket.closed": "закрыто",
    # errors (keys follow controller.domain.errors codes)
    "error.internal": "Что-то пошло не так. Попробуйте ещё раз чуть позже.",
    "error.stale_button": "Эта кнопка устарела. Откройте меню заново: /menu",
    "error.domain_error": "Не получилось выполнить действие.",
    "error.not_found": "Не найдено.",
    "error.user_not_found": "Сначала отправьте /start.",
    "error.plan_not_found": "Такого тарифа нет.",
    "error.subscription_not_found": "Подписка не найдена.",
    "error.promo_not_found": "Такого промокода нет.",
    "error.node_not_found": "Этот сервер сейчас недоступен.",
    "error.config_not_found": "Устройство не найдено.",
    "error.payment_not_found": "Счёт не найден. Создайте новый.",
    "error.ticket_not_found": "Обращение не найдено.",
    "error.invalid_input": "Проверьте введённые данные.",
    "error.conflict": "Это действие сейчас невозможно.",
    "error.already_exists": "Такое уже есть.",
    "error.invalid_state": "Это действие сейчас невозможно для подписки.",
    "error.promo_already_used": "Вы уже использовали этот промокод.",
    "error.trial_used": "Пробный период уже был использован.",
    "error.payment_mismatch": "Сумма платежа не совпадает со счётом. Создайте новый счёт.",
    "error.forbidden": "Это действие недоступно.",
    "error.user_banned": "Доступ к сервису для вас закрыт. Если это ошибка — напишите в поддержку.",
    "error.enrollment_refused": "Отказано.",
    "error.limit_reached": "Достигнут лимит.",
    "error.promo_exhausted": "Промокод больше не действует: все активации использованы.",
    "error.unavailable": "Сейчас это недоступно.",
    "error.plan_inactive": "Этот тариф больше не продаётся. Выберите другой.",
    "error.promo_inactive": "Этот промокод сейчас не действует.",
    "error.no_active_subscription": "Нужна активная подписка.",
    "error.no_server_available": "Сейчас нет свободных серверов для этого протокола. Попробуйте другой.",
    "error.trial_unavailable": "Пробный период сейчас не предоставляется.",
    "error.payment_provider_unavailable": "Этот способ оплаты сейчас недоступен.",
}
